"""/v1/jobs/{id}/neighbours and /v1/jobs/{id}/search: an embed job's images nearest to one of
its items, or to an uploaded image (`service/api/explore.py` does the work)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from dcl_core.errors import UserError
from dcl_core.evaluation.index import MAX_K, BadIndex
from service.api import explore
from service.api.deps import INT32_MAX, CurrentKey, FieldError, OwnedJob, PlaneDep, SettingsDep, too_many
from service.api.previews import torch_available
from service.api.uploads import check_plain_name, receive_upload
from service.control.models import Job

router = APIRouter(prefix="/v1/jobs", tags=["explore"])


class Neighbour(BaseModel):
    item: int = Field(description="Index in the embed job's dataset order.")
    score: float = Field(description="Cosine similarity to the query, -1..1.")
    label: int | None = Field(description="Its label; null for unlabelled data.")


class NeighboursPublic(BaseModel):
    item: int
    label: int | None
    items: list[Neighbour] = Field(description="The k nearest other images, nearest first.")


class QueryImage(BaseModel):
    width: int
    height: int


class SearchPublic(BaseModel):
    query: QueryImage
    items: list[Neighbour] = Field(description="The k nearest images of the dataset, nearest first.")


K = Annotated[int, Query(ge=1, le=MAX_K, description="How many neighbours.")]
_NOT_USABLE = {404: {"description": "No such job"},
               409: {"description": "Not a succeeded embed job with an index"}}


def job_index(job: Job, plane, settings) -> explore.JobIndex:
    """The succeeded embed job's index, or the 409 that says why there is none."""
    if job.type != "embed":
        raise HTTPException(409, f"job {job.id} is a {job.type} job; neighbours and search are an embed job's "
                                 '(submit {"type": "embed", "encoder_job": ..., "data": ...})')
    if job.status != "succeeded":
        raise HTTPException(409, f"job {job.id} is {job.status}; wait until it has succeeded")
    if not (job.result or {}).get("index"):
        raise HTTPException(409, f"job {job.id} made no index; submit the embed job again with \"index\": true")
    try:
        return explore.open_index(job.id, lambda name: plane.storage.artifact_path(job.id, name),
                                  settings.max_index_bytes)
    except BadIndex as exc:
        raise HTTPException(409, f"the index of job {job.id} cannot be read: {exc}") from None


@router.get("/{job_id}/neighbours", response_model=NeighboursPublic, responses=_NOT_USABLE)
async def get_neighbours(job: OwnedJob, plane: PlaneDep, settings: SettingsDep,
                         item: Annotated[int, Query(ge=0, le=INT32_MAX, description="An item of the embed job's "
                                                    "dataset (its index in dataset order).")],
                         k: K = 10) -> NeighboursPublic:
    """The k images of an embed job's dataset nearest to one of them (cosine similarity of the
    encoder's features), the image itself left out."""
    return await run_in_threadpool(item_neighbours, job, plane, settings, item, k)


def item_neighbours(job: Job, plane, settings, item: int, k: int) -> NeighboursPublic:
    """One trip to the thread pool for the whole answer (a hand-off costs more than the lookup)."""
    found = job_index(job, plane, settings)
    if item >= found.index.items:
        raise FieldError(["query", "item"], f"item {item} is past the last of the job's {found.index.items} images "
                                            f"(0..{found.index.items - 1})")
    return NeighboursPublic.model_validate(explore.neighbours(found, item, k))


_SEARCH_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary",
                            "description": "An image (JPEG, PNG, BMP, GIF, WebP, TIFF, PPM), at most 16 MiB."}}}}}}}
_busy: set[str] = set()
"""Keys with a search being embedded: one at a time each (each is a torch process)."""


@router.post("/{job_id}/search", response_model=SearchPublic, openapi_extra=_SEARCH_BODY,
             responses={**_NOT_USABLE, 413: {"description": "Image too large"},
                        422: {"description": "Not a usable image"},
                        429: {"description": "A search for this key is already running"},
                        503: {"description": "torch is not installed where the API runs"}})
async def search(request: Request, job: OwnedJob, owner: CurrentKey, plane: PlaneDep, settings: SettingsDep,
                 k: K = 10) -> SearchPublic:
    """The k images of an embed job's dataset nearest to an uploaded image, embedded by the same
    encoder (in a subprocess on the API's host, one at a time per key)."""
    found = await run_in_threadpool(job_index, job, plane, settings)
    encoder_job = str(job.spec_data.get("encoder_job", ""))
    encoder_dir = await run_in_threadpool(plane.storage.fetch_job, encoder_job)
    if not (encoder_dir / "encoder.safetensors").is_file():
        raise HTTPException(409, f"the encoder of job {job.id} (job {encoder_job}) is no longer stored; "
                                 "search needs it to embed the image")
    if not torch_available():
        raise HTTPException(503, "search embeds the image with torch where the API runs, and it is not installed "
                                 "here (the slim API image); use GET .../neighbours, or run the API where torch is")
    if owner in _busy:
        raise too_many("a search for this key is still running; wait for it", 5)
    _busy.add(owner)
    try:
        with tempfile.TemporaryDirectory(prefix="dcl-search-upload-") as work:
            received = await receive_upload(request, Path(work), explore.SEARCH_MAX_BYTES, check_name=check_plain_name,
                                            too_large_fix="the largest image a search takes; send a smaller copy")
            image_size = int((job.result or {}).get("image_size") or 0) or None
            if image_size is None:
                raise HTTPException(409, f"job {job.id} does not record its image size; run the embed job again")
            result = await run_in_threadpool(explore.search, found, received.path, encoder_dir, image_size, k)
    except explore.SearchUnavailable as exc:
        raise HTTPException(503, f"search needs torch where the API runs: {exc}") from None
    except UserError as exc:
        raise FieldError(["body", "file"], str(exc).removeprefix("file: ")) from None
    except BadIndex as exc:
        raise HTTPException(409, f"job {job.id}: {exc}") from None
    finally:
        _busy.discard(owner)
    return SearchPublic.model_validate(result)
