"""/v1/datasets: upload (zip/tar of an image folder, or .npz), list, read, delete."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from dcl_core.data.stored import dataset_bytes, store_dataset
from dcl_core.errors import UserError
from dcl_core.files import is_disk_error
from service.deps import INT32_MAX, CurrentKey, OwnedDataset, SettingsDep, StoreDep, too_many
from service.guards import hide_paths
from service.schemas import DatasetPublic, DatasetsPublic
from service.uploads import receive_upload

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOADS_DIR = ".uploads"
"""Under datasets_dir: files being received and datasets being checked (never registered)."""

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


def clean_stale_uploads(datasets_dir: Path, older_than_s: float = 6 * 3600) -> None:
    """Remove what interrupted uploads left (an API killed mid-upload)."""
    uploads = datasets_dir / UPLOADS_DIR
    if not uploads.is_dir():
        return
    now = time.time()
    for entry in uploads.iterdir():
        try:
            if now - entry.stat().st_mtime > older_than_s:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        except OSError:
            pass


@router.post(
    "", status_code=201, response_model=DatasetPublic, openapi_extra=_UPLOAD_BODY,
    responses={413: {"description": "Upload too large"}, 415: {"description": "Not a zip/tar/npz"},
               422: {"description": "Invalid dataset"}, 429: {"description": "Storage quota reached"},
               503: {"description": "Dataset storage read-only"}, 507: {"description": "Dataset storage full"}},
)
async def upload_dataset(request: Request, response: Response, owner: CurrentKey, store: StoreDep,
                         settings: SettingsDep) -> DatasetPublic:
    """Upload an image dataset: streamed to disk, extracted safely, every image decoded once."""
    try:
        return await _upload(request, response, owner, store, settings)
    except OSError as exc:
        if not is_disk_error(exc):
            raise
        raise disk_error(exc, "nothing was stored") from None


async def _upload(request: Request, response: Response, owner: str, store, settings) -> DatasetPublic:
    skip_corrupt = request.query_params.get("skip_corrupt", "false").lower() in ("1", "true", "yes")
    stored = await run_in_threadpool(store.stored_bytes, owner)
    if stored >= settings.max_stored_bytes_per_key:
        raise too_many(f"this key stores {stored} bytes, its limit is {settings.max_stored_bytes_per_key}; "
                       "delete datasets you no longer need", 3600)
    datasets_dir = Path(settings.datasets_dir)
    work = datasets_dir / UPLOADS_DIR
    received = await receive_upload(request, work, settings.max_upload_bytes)
    dataset_id = f"ds_{secrets.token_hex(8)}"
    checking = work / dataset_id
    final = datasets_dir / dataset_id
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
                        f"{checking}/": "", str(checking): received.filename, str(datasets_dir): "<datasets>"}
            raise HTTPException(422, f"{received.filename}: {hide_paths(str(exc), shown_as)}") from None
        received.path.unlink(missing_ok=True)
        size = await run_in_threadpool(dataset_bytes, checking)  # an .npz counts unpacked
        if stored + size > settings.max_stored_bytes_per_key:
            raise too_many(f"this dataset unpacks to {size} bytes, which would take the key past its storage "
                           f"limit of {settings.max_stored_bytes_per_key} bytes", 3600)
        await anyio.to_thread.run_sync(os.replace, checking, final)
        name = (received.fields.get("name") or received.filename)[:255]
        row = await run_in_threadpool(
            store.create_dataset, owner, name, summary.to_dict(), size, id=dataset_id
        )
    except BaseException:
        # Nothing half-made stays: not the received file, not the extracted tree.
        received.path.unlink(missing_ok=True)
        shutil.rmtree(checking, ignore_errors=True)
        if final.exists() and store.get_dataset(dataset_id) is None:
            shutil.rmtree(final, ignore_errors=True)
        raise
    response.headers["Location"] = f"/v1/datasets/{dataset_id}"
    return DatasetPublic.from_row(row)


@router.get("", response_model=DatasetsPublic)
def list_datasets(owner: CurrentKey, store: StoreDep,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100,
                  offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0) -> DatasetsPublic:
    items, total = store.list_datasets(owner, limit=limit, offset=offset)
    return DatasetsPublic(items=[DatasetPublic.from_row(r) for r in items], total=total, limit=limit, offset=offset)


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset: OwnedDataset) -> DatasetPublic:
    return DatasetPublic.from_row(dataset)


@router.delete("/{dataset_id}", status_code=204, responses={409: {"description": "An active job uses it"},
                                                            503: {"description": "Dataset storage read-only"}})
def delete_dataset(dataset: OwnedDataset, owner: CurrentKey, store: StoreDep, settings: SettingsDep) -> Response:
    source = json.dumps(f"dataset:{dataset['id']}")
    for status in ("queued", "running"):
        jobs, _ = store.list_jobs(owner, status=status, limit=10_000)
        users = [job["id"] for job in jobs if source in json.dumps(job["spec"])]
        if users:
            raise HTTPException(409, f"dataset {dataset['id']} is used by {status} job(s) {', '.join(users[:5])}; "
                                     "cancel them or wait until they end")
    # The files go first (renamed aside in one step), then the row: a volume that cannot change
    # keeps both, so no files outlive their row outside the quota.
    folder = Path(settings.datasets_dir) / dataset["id"]
    trash: Path | None = Path(settings.datasets_dir) / UPLOADS_DIR / f"deleting-{dataset['id']}"
    try:
        trash.parent.mkdir(exist_ok=True)
        os.rename(folder, trash)
    except FileNotFoundError:
        trash = None  # its files are gone already
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise disk_error(exc, "the dataset was not deleted") from None
        trash = folder  # .uploads on another volume: delete in place
    try:
        store.delete_dataset(dataset["id"], owner)
    except BaseException:
        if trash is not None and trash != folder:
            os.rename(trash, folder)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)  # what stays is swept by clean_stale_uploads
    return Response(status_code=204)
