"""/v1/models: the model registry. Register a succeeded pretrain job's encoder as a model's next
version, point aliases at versions, read a version by number or alias, and download its files
(served as job artifacts are: checked sha256, Repr-Digest, ETag, Range). Another key's model
is a 404, like a model that does not exist."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query, Response

from service.api.deps import INT32_MAX, CurrentKey, PlaneDep
from service.api.routes.artifacts import DOWNLOAD_RESPONSES, listed, serve
from service.api.routes.jobs import json_body
from service.api.schemas import ArtifactsPublic
from service.api.schemas_registry import (
    AliasPattern, AliasPublic, ModelNamePattern, ModelPublic, ModelsPublic, ModelVersionPublic, RegisterModel,
    SetAlias, version_url,
)
from service.control.models import ModelVersion
from service.control.plane import ControlPlane

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelName = Annotated[str, Path(min_length=1, max_length=100, pattern=ModelNamePattern, description="A model's name.")]
Alias = Annotated[str, Path(min_length=1, max_length=64, pattern=AliasPattern, description="An alias (production).")]
Version = Annotated[int, Path(ge=1, le=INT32_MAX, description="A version number.")]
ArtifactName = Annotated[str, Path(max_length=255, description="A file of the version's job (encoder.safetensors).")]
IfNoneMatch = Annotated[str | None, Header()]


@router.post("", status_code=201, response_model=ModelVersionPublic, dependencies=[Depends(json_body)],
             responses={404: {"description": "No such job"}, 409: {"description": "Not a succeeded pretrain job, "
                                                                                   "or already a version"},
                        415: {"description": "Not sent as JSON"}})
def register(body: Annotated[RegisterModel, Body()], response: Response, owner: CurrentKey,
             plane: PlaneDep) -> ModelVersionPublic:
    """Register a succeeded pretrain job's encoder as the next version of model `name` (made on
    first use): `{"name": "cifar-r18", "job": "job_..."}` -> `{"name", "version": 1, ...}`."""
    version = plane.registry.register(owner, body.name, body.job)
    response.headers["Location"] = version_url(version.name, version.version)
    return ModelVersionPublic.from_version(version)


@router.get("", response_model=ModelsPublic)
def list_models(owner: CurrentKey, plane: PlaneDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0) -> ModelsPublic:
    """Your models by name, each with its latest version and aliases."""
    items, total = plane.registry.list(owner, limit=limit, offset=offset)
    return ModelsPublic(items=[ModelPublic.from_model(m) for m in items], total=total, limit=limit, offset=offset)


# ---- a version, by alias or by number (the alias routes first: `{name}` never holds an @) ----

def by_alias(plane: ControlPlane, owner: str, name: str, alias: str) -> ModelVersion:
    version = plane.registry.version(owner, name, alias=alias)
    if version is None:
        missing = plane.registry.get(owner, name) is None
        raise HTTPException(404, f"model {name} not found" if missing else f"model {name} has no alias {alias!r}")
    return version


def by_number(plane: ControlPlane, owner: str, name: str, number: int) -> ModelVersion:
    version = plane.registry.version(owner, name, version=number)
    if version is None:
        missing = plane.registry.get(owner, name) is None
        raise HTTPException(404, f"model {name} not found" if missing else f"model {name} has no version {number}")
    return version


def files(plane: ControlPlane, version: ModelVersion) -> ArtifactsPublic:
    """The version's files, each at its URL under the version's number (an alias may move)."""
    base = version_url(version.name, version.version)
    return listed(plane, version.job_id, lambda artifact: f"{base}/files/{artifact}")


@router.get("/{name}@{alias}", response_model=ModelVersionPublic)
def get_by_alias(name: ModelName, alias: Alias, owner: CurrentKey, plane: PlaneDep) -> ModelVersionPublic:
    """The version the alias points at now."""
    return ModelVersionPublic.from_version(by_alias(plane, owner, name, alias))


@router.get("/{name}@{alias}/files", response_model=ArtifactsPublic)
def files_by_alias(name: ModelName, alias: Alias, owner: CurrentKey, plane: PlaneDep) -> ArtifactsPublic:
    return files(plane, by_alias(plane, owner, name, alias))


@router.get("/{name}@{alias}/files/{artifact:path}", response_class=Response, responses=DOWNLOAD_RESPONSES)
def download_by_alias(name: ModelName, alias: Alias, artifact: ArtifactName, owner: CurrentKey, plane: PlaneDep,
                      if_none_match: IfNoneMatch = None) -> Response:
    """A file of the version the alias points at now, as `GET /v1/jobs/{id}/artifacts/{name}` serves it."""
    return serve(plane, by_alias(plane, owner, name, alias).job_id, artifact, if_none_match)


@router.get("/{name}", response_model=ModelPublic)
def get_model(name: ModelName, owner: CurrentKey, plane: PlaneDep) -> ModelPublic:
    """The model with its aliases and every version (job, scores, sha256, created), newest first."""
    model = plane.registry.get(owner, name)
    if model is None:
        raise HTTPException(404, f"model {name} not found")
    return ModelPublic.from_model(model)


@router.delete("/{name}", status_code=204)
def delete_model(name: ModelName, owner: CurrentKey, plane: PlaneDep) -> Response:
    """Forget the model, its versions and aliases (their jobs stay)."""
    plane.registry.delete_model(owner, name)
    return Response(status_code=204)


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic)
def get_version(name: ModelName, version: Version, owner: CurrentKey, plane: PlaneDep) -> ModelVersionPublic:
    return ModelVersionPublic.from_version(by_number(plane, owner, name, version))


@router.delete("/{name}/versions/{version}", status_code=204,
               responses={409: {"description": "An alias points at it"}})
def delete_version(name: ModelName, version: Version, owner: CurrentKey, plane: PlaneDep) -> Response:
    """Forget a version (its job stays, and may then be deleted); refused while an alias points at it."""
    plane.registry.delete_version(owner, name, version)
    return Response(status_code=204)


@router.get("/{name}/versions/{version}/files", response_model=ArtifactsPublic)
def files_by_number(name: ModelName, version: Version, owner: CurrentKey, plane: PlaneDep) -> ArtifactsPublic:
    return files(plane, by_number(plane, owner, name, version))


@router.get("/{name}/versions/{version}/files/{artifact:path}", response_class=Response,
            responses=DOWNLOAD_RESPONSES)
def download_by_number(name: ModelName, version: Version, artifact: ArtifactName, owner: CurrentKey,
                       plane: PlaneDep, if_none_match: IfNoneMatch = None) -> Response:
    """A file of the version, as `GET /v1/jobs/{id}/artifacts/{name}` serves it."""
    return serve(plane, by_number(plane, owner, name, version).job_id, artifact, if_none_match)


# ---- aliases ---------------------------------------------------------------------------------

@router.put("/{name}/aliases/{alias}", response_model=AliasPublic, dependencies=[Depends(json_body)],
            responses={415: {"description": "Not sent as JSON"}})
def set_alias(name: ModelName, alias: Alias, body: Annotated[SetAlias, Body()], owner: CurrentKey,
              plane: PlaneDep) -> AliasPublic:
    """Point the alias at a version: `{"version": 2}`. Made if new, moved if not; jobs already
    submitted with `model:NAME@ALIAS` keep the version they resolved."""
    plane.registry.set_alias(owner, name, alias, body.version)
    return AliasPublic(name=name, alias=alias, version=body.version)


@router.delete("/{name}/aliases/{alias}", status_code=204)
def delete_alias(name: ModelName, alias: Alias, owner: CurrentKey, plane: PlaneDep) -> Response:
    plane.registry.delete_alias(owner, name, alias)
    return Response(status_code=204)
