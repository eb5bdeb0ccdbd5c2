"""The FastAPI front end: routes, public schemas, admission, the dashboard. Never imports torch or the worker."""
