"""Dependencies the routes share: the control plane, the settings, who is asking, what they own.

Each is `async def`: FastAPI runs a plain `def` dependency in its thread pool, and a status read
would pay one thread hand-off (and a GIL hand-over) per dependency. Only the database calls
leave the event loop, one `run_in_threadpool` each.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from service.control.models import Dataset, Job
from service.control.plane import ControlPlane
from service.control.settings import Settings, hash_key

LOCAL_OWNER = "local"
"""The owner of everything while auth is off (no API keys: the embedded, loopback-only mode)."""


async def get_plane(request: Request) -> ControlPlane:
    return request.app.state.plane


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


PlaneDep = Annotated[ControlPlane, Depends(get_plane)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer API_KEY")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key")


async def current_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> str:
    """The owner name of the caller's API key; "local" when auth is off. 401 without a valid key."""
    owners: dict[str, str] = request.app.state.key_owners
    if not owners:
        return LOCAL_OWNER
    key = bearer.credentials if bearer is not None else api_key
    if not key:
        raise HTTPException(
            401, "missing API key: send it as `Authorization: Bearer KEY` or `X-API-Key: KEY`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    owner = owners.get(hash_key(key))
    if owner is None:
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
    return owner


CurrentKey = Annotated[str, Depends(current_key)]


async def viewer(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> str | None:
    """Who reads an operational view (/readyz, /metrics): OPERATOR (auth off, or an operator key),
    an owner name (any other valid key), or None (no key, or not a valid one)."""
    if not request.app.state.key_owners:
        return OPERATOR
    try:
        owner = await current_key(request, bearer, api_key)
    except HTTPException:
        return None
    return OPERATOR if owner in request.app.state.operator_owners else owner


OPERATOR = "*operator*"
"""`viewer()` for someone who may see every job and worker."""
Viewer = Annotated[str | None, Depends(viewer)]

ID_PATTERN = r"^[A-Za-z0-9_-]+$"
"""Every id the service makes (job_..., ds_...) fits it; nothing else reaches the database."""
INT32_MAX = 2**31 - 1
"""Steps are 32-bit integers in the job store: the bound of `since`, `offset` and Last-Event-ID."""

JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="A job id (job_...).")]
DatasetId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN,
                                description="A dataset id (ds_...).")]


async def owned_job(job_id: JobId, owner: CurrentKey, plane: PlaneDep) -> Job:
    """The job, if it exists and belongs to the caller; 404 otherwise (no existence leak)."""
    job = await run_in_threadpool(plane.jobs.get, job_id, owner)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    return job


async def owned_dataset(dataset_id: DatasetId, owner: CurrentKey, plane: PlaneDep) -> Dataset:
    dataset = await run_in_threadpool(plane.datasets.get, dataset_id, owner)
    if dataset is None:
        raise HTTPException(404, f"dataset {dataset_id} not found")
    return dataset


OwnedJob = Annotated[Job, Depends(owned_job)]
OwnedDataset = Annotated[Dataset, Depends(owned_dataset)]


class FieldError(Exception):
    """A request field that is well-formed but unusable here (a local path, an unknown dataset):
    answered 422 in the same shape as a validation error."""

    def __init__(self, loc: list[str | int], message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


def too_many(message: str, retry_after_s: int = 60) -> HTTPException:
    return HTTPException(429, message, headers={"Retry-After": str(retry_after_s)})
