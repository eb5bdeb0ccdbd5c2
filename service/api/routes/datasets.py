"""/v1/datasets: upload (zip/tar of an image folder, or .npz), list, read, delete."""

from __future__ import annotations

import errno
import secrets
from functools import partial
import shutil
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from dcl_core.data.stored import dataset_bytes, store_dataset
from dcl_core.errors import UserError
from dcl_core.files import is_disk_error
from service.api.deps import INT32_MAX, CurrentKey, OwnedDataset, PlaneDep, SettingsDep, too_many
from service.api.guards import hide_paths
from service.api.schemas import DatasetPublic, DatasetsPublic
from service.api.uploads import receive_upload

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": ".zip/.tar/.tar.gz/.tgz of an image folder, or .npz"},
                        "name": {"type": "string", "description": "A name to show (default: the file name)."},
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "parameters": [
        {"name": "filename", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "With a raw (non-multipart) body: the file's name, which gives its kind."},
        {"name": "skip_corrupt", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
         "description": "Register the dataset even if some images are unreadable (they are listed)."},
    ],
}


DISK_ANSWERS = {
    errno.ENOSPC: (507, "is full (no space left on the device)", "ask the operator to free space there"),
    errno.EDQUOT: (507, "is over its disk quota", "ask the operator to free space there or raise the quota"),
    errno.EROFS: (503, "is read-only", "ask the operator to mount it read-write"),
}
"""A full or read-only datasets volume is the server's problem: 507/503, never a 4xx or a 500."""


def disk_error(exc: OSError, done: str) -> HTTPException:
    """The answer to a disk error on the datasets volume (without server paths); `done` says
    what became of the request."""
    status, what, fix = DISK_ANSWERS.get(exc.errno, (503, f"cannot be written ({exc.strerror})", "try again later"))
    return HTTPException(status, f"the server's dataset storage (DCL_DATASETS_DIR) {what}; {done}. "
                                 f"Try again later, or {fix}", headers={"Retry-After": "300"})


@router.post(
    "", status_code=201, response_model=DatasetPublic, openapi_extra=_UPLOAD_BODY,
    responses={413: {"description": "Upload too large"}, 415: {"description": "Not a zip/tar/npz"},
               422: {"description": "Invalid dataset"}, 429: {"description": "Storage quota reached"},
               503: {"description": "Dataset storage read-only"}, 507: {"description": "Dataset storage full"}},
)
async def upload_dataset(request: Request, response: Response, owner: CurrentKey, plane: PlaneDep,
                         settings: SettingsDep) -> DatasetPublic:
    """Upload an image dataset: streamed to disk, extracted safely, every image decoded once."""
    try:
        return await _upload(request, response, owner, plane, settings)
    except OSError as exc:
        if not is_disk_error(exc):
            raise
        raise disk_error(exc, "nothing was stored") from None


async def _upload(request: Request, response: Response, owner: str, plane, settings) -> DatasetPublic:
    skip_corrupt = request.query_params.get("skip_corrupt", "false").lower() in ("1", "true", "yes")
    stored = await run_in_threadpool(plane.datasets.stored_bytes, owner)
    if stored >= settings.max_stored_bytes_per_key:
        raise too_many(f"this key stores {stored} bytes, its limit is {settings.max_stored_bytes_per_key}; "
                       "delete datasets you no longer need", 3600)
    storage = plane.storage
    work = storage.upload_area()
    received = await receive_upload(request, work, settings.max_upload_bytes)
    dataset_id = f"ds_{secrets.token_hex(8)}"
    checking = work / dataset_id
    try:
        if stored + received.size > settings.max_stored_bytes_per_key:
            raise too_many(f"this upload would take the key past its storage limit of "
                           f"{settings.max_stored_bytes_per_key} bytes", 3600)
        try:
            summary = await run_in_threadpool(
                store_dataset, received.path, checking, filename=received.filename,
                max_total_bytes=settings.max_extracted_bytes, max_files=settings.max_dataset_files,
                max_ratio=settings.max_compression_ratio, skip_corrupt=skip_corrupt,
            )
        except UserError as exc:
            shown_as = {str(received.path): received.filename, received.path.name: received.filename,
                        f"{checking}/": "", str(checking): received.filename, str(storage.datasets_dir): "<datasets>"}
            raise HTTPException(422, f"{received.filename}: {hide_paths(str(exc), shown_as)}") from None
        received.path.unlink(missing_ok=True)
        size = await run_in_threadpool(dataset_bytes, checking)  # an .npz counts unpacked
        if stored + size > settings.max_stored_bytes_per_key:
            raise too_many(f"this dataset unpacks to {size} bytes, which would take the key past its storage "
                           f"limit of {settings.max_stored_bytes_per_key} bytes", 3600)
        sha256 = await anyio.to_thread.run_sync(storage.add_dataset, dataset_id, checking)
        name = (received.fields.get("name") or received.filename)[:255]
        row = await run_in_threadpool(partial(plane.datasets.create, owner, name, summary.to_dict(), size,
                                              id=dataset_id, sha256=sha256))
    except BaseException:
        # Nothing half-made stays: not the received file, not the extracted tree.
        received.path.unlink(missing_ok=True)
        shutil.rmtree(checking, ignore_errors=True)
        if plane.datasets.get(dataset_id) is None:
            await anyio.to_thread.run_sync(storage.discard_dataset, dataset_id)
        raise
    response.headers["Location"] = f"/v1/datasets/{dataset_id}"
    return DatasetPublic.from_dataset(row)


@router.get("", response_model=DatasetsPublic)
def list_datasets(owner: CurrentKey, plane: PlaneDep,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100,
                  offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0) -> DatasetsPublic:
    items, total = plane.datasets.list(owner, limit=limit, offset=offset)
    return DatasetsPublic(items=[DatasetPublic.from_dataset(d) for d in items], total=total, limit=limit, offset=offset)


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset: OwnedDataset) -> DatasetPublic:
    return DatasetPublic.from_dataset(dataset)


@router.delete("/{dataset_id}", status_code=204, responses={409: {"description": "An active job uses it"},
                                                            503: {"description": "Dataset storage read-only"}})
def delete_dataset(dataset: OwnedDataset, owner: CurrentKey, plane: PlaneDep) -> Response:
    users = plane.jobs.using_dataset(owner, f"dataset:{dataset.id}")
    if users:
        raise HTTPException(409, f"dataset {dataset.id} is used by {users[0].status} job(s) "
                                 f"{', '.join(job.id for job in users)}; cancel them or wait until they end")
    try:
        plane.storage.remove_dataset(dataset.id, lambda: plane.datasets.delete(dataset.id, owner))
    except OSError as exc:
        raise disk_error(exc, "the dataset was not deleted") from None
    return Response(status_code=204)
