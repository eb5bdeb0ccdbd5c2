"""dcl-service: the control plane (`service.control`), the HTTP API (`service.api`) and the `dcl` commands that start and talk to them."""
