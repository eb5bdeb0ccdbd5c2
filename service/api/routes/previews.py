"""/v1/datasets/{id}/samples and /v1/datasets/{id}/augment-preview: what an upload looks like,
and what training will see of it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from dcl_core.config import AugmentConfig
from dcl_core.errors import UserError
from service.api import previews
from service.api.deps import CurrentKey, OwnedDataset, PlaneDep, SettingsDep, too_many

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

PREVIEW_TIMEOUT_S = 60.0


class Sample(BaseModel):
    index: int = Field(description="Position in the dataset (class by class for image folders).")
    label: int | None
    class_: str | None = Field(alias="class", serialization_alias="class")
    width: int
    height: int
    src: str = Field(description="A PNG thumbnail as a data: URL.")


class SamplesPublic(BaseModel):
    dataset_id: str
    items: list[Sample]


class AugmentPreview(BaseModel):
    augment: AugmentConfig = AugmentConfig()
    n: int = Field(default=6, ge=1, le=16, description="Images (rows).")
    views: int = Field(default=4, ge=1, le=8, description="Augmented views per image.")
    image_size: int = Field(default=32, ge=8, le=128, description="Square size the images are resized to.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


@router.get("/{dataset_id}/samples", response_model=SamplesPublic, response_model_by_alias=True)
def dataset_samples(dataset: OwnedDataset, plane: PlaneDep,
                    n: Annotated[int, Query(ge=1, le=64, description="How many images, spread over the dataset.")] = 24,
                    items: Annotated[str | None, Query(
                        max_length=1000, pattern=r"^\d{1,10}(,\d{1,10}){0,63}$",
                        description="These images instead (comma-separated indices in dataset order, at most 64; "
                        "those past the end are left out): an embed job's items.")] = None,
                    ) -> SamplesPublic:
    wanted = [int(i) for i in items.split(",")] if items else None
    try:
        items = previews.dataset_samples(plane.storage.dataset_dir(dataset.id), n, wanted)
    except UserError as exc:
        raise HTTPException(409, f"dataset {dataset.id}: {exc}") from None
    return SamplesPublic(dataset_id=dataset.id, items=[Sample.model_validate(i) for i in items])


_busy: set[str] = set()
"""Keys with a preview running: one at a time each (a preview is a torch process)."""


@router.post("/{dataset_id}/augment-preview", response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "Rows: the image, then its views"},
                        429: {"description": "A preview for this key is already running"},
                        503: {"description": "torch is not installed where the API runs"}})
async def augment_preview(dataset: OwnedDataset, owner: CurrentKey, plane: PlaneDep, settings: SettingsDep,
                          body: Annotated[AugmentPreview, Body()] = AugmentPreview()) -> Response:
    """The `dcl show-augment` picture of the dataset's first images under an augment config, to
    tune `crop_scale`, jitter and the rest before training. Needs torch on the API's host."""
    if not previews.torch_available():
        raise HTTPException(503, "augmented previews need torch where the API runs, and it is not installed "
                                 "here (the slim API image); run `dcl show-augment` on a worker machine instead")
    if owner in _busy:
        raise too_many("a preview for this key is still being drawn; wait for it", 5)
    _busy.add(owner)
    try:
        png = await run_in_threadpool(
            previews.augment_preview, plane.storage.dataset_dir(dataset.id),
            body.augment.model_dump(mode="json"), n=body.n, views=body.views, image_size=body.image_size,
            seed=body.seed, timeout_s=PREVIEW_TIMEOUT_S, max_memory_bytes=settings.preview_max_memory_bytes)
    except previews.PreviewUnavailable as exc:
        raise HTTPException(503, f"augmented previews need torch where the API runs: {exc}") from None
    except UserError as exc:  # PreviewTooLarge included: the request asked for too much
        raise HTTPException(422, f"augment preview: {exc}") from None
    finally:
        _busy.discard(owner)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
