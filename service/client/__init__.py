"""The Python client of dcl-service: typed, documented, and free of torch (it needs httpx,
httpx-sse and pydantic's light dcl_core modules only), so it runs wherever you call the service.

    from dcl_service import Client

    with Client("http://127.0.0.1:8000", key) as client:
        job = client.pretrain({"method": "dcl", "dataset": "builtin:digits", "epochs": 5,
                               "evaluate": {"train": "builtin:digits",
                                            "test": {"source": "builtin:digits", "split": "test"}}})
        job = client.wait(job.id, progress=True)
        client.register("digits-dcl", job.id)
        client.set_alias("digits-dcl", "production", 1)
        client.download_model("digits-dcl@production", "prod")   # sha256-checked files

What it returns are `Record`s: the API's JSON as dicts whose keys are also typed attributes
(`job.status`, `job["status"]`). Errors the service answers are `ApiError`, with its message.
"""

from service.client.core import DEFAULT_URL, ApiError, check, default_url
from service.client.records import (
    Alias, Artifact, Attempt, Dataset, Delivery, Event, Job, Model, ModelVersion, Page, Progress, Record, Webhook,
)
from service.client.api import Client
from service.signing import verify_signature

__all__ = [
    "DEFAULT_URL", "Alias", "ApiError", "Artifact", "Attempt", "Client", "Dataset", "Delivery", "Event", "Job",
    "Model", "ModelVersion", "Page", "Progress", "Record", "Webhook", "check", "default_url", "verify_signature",
]
