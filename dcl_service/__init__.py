"""`from dcl_service import Client`: the service's Python client (`service/client/`), by the
name of the distribution. Torch-free."""

from service.client import *  # noqa: F401,F403
from service.client import __all__  # noqa: F401
