"""/v1/jobs/{id}/artifacts: a job's files, listed with their sha256 and served checked, with
`Repr-Digest`, ETag and Range. Where the files are is the storage's business."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path as PathParam, Response
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import Headers
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from dcl_core.files import sha256_file
from service.api.deps import OwnedJob, PlaneDep
from service.api.schemas import ArtifactPublic, ArtifactsPublic
from service.api.store_download import StoredObject
from service.control.models import Artifact
from service.control.plane import ControlPlane

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def artifact_url(job_id: str, name: str) -> str:
    return f"/v1/jobs/{job_id}/artifacts/{name}"


@router.get("/{job_id}/artifacts", response_model=ArtifactsPublic)
def list_artifacts(job: OwnedJob, plane: PlaneDep) -> ArtifactsPublic:
    return listed(plane, job.id, lambda name: artifact_url(job.id, name))


def listed(plane: ControlPlane, job_id: str, url: Callable[[str], str]) -> ArtifactsPublic:
    """A job's files, each with the URL that serves it (`url(name)`)."""
    items = [ArtifactPublic(name=a.name, size=a.size, sha256=a.sha256, created_at=a.created_at, url=url(a.name))
             for a in plane.artifacts.list(job_id)]
    return ArtifactsPublic(job_id=job_id, items=items)


_verified: dict[tuple, str] = {}
"""(path, inode, size, mtime_ns) -> sha256 of files already hashed (cleared when it grows)."""


def file_sha256(path: Path, stat: os.stat_result) -> str:
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    digest = _verified.get(key)
    if digest is None:
        digest = sha256_file(path)
        if len(_verified) > 4096:
            _verified.clear()
        _verified[key] = digest
    return digest


class ArtifactFile(FileResponse):
    """A FileResponse whose Range errors (400, 416) come in the JSON error model, like every
    other error (Starlette answers them in plain text). Uses Starlette's own range parser."""

    async def __call__(self, scope, receive, send) -> None:
        headers = Headers(scope=scope)
        http_range, if_range = headers.get("range"), headers.get("if-range")
        if http_range is not None and scope["method"] in ("GET", "HEAD") and self.stat_result is not None \
                and (if_range is None or self._should_use_range(if_range)):
            try:
                self._parse_range_header(http_range, self.stat_result.st_size)
            except MalformedRangeHeader as exc:
                error = JSONResponse({"detail": f"malformed Range header ({exc.content}); "
                                                "send `Range: bytes=START-[END]`"}, status_code=400)
                return await error(scope, receive, send)
            except RangeNotSatisfiable as exc:
                error = JSONResponse({"detail": f"the Range starts past the end of the file "
                                                f"({exc.max_size} bytes)"}, status_code=416,
                                     headers={"Content-Range": f"bytes */{exc.max_size}"})
                return await error(scope, receive, send)
        await super().__call__(scope, receive, send)


DOWNLOAD_RESPONSES = {200: {"content": {"application/octet-stream": {}, "application/json": {}}},
                      400: {"description": "Malformed Range header"},
                      416: {"description": "Range not satisfiable"},
                      206: {"description": "Partial content (Range)"}, 304: {"description": "Not modified"},
                      404: {"description": "No such artifact"},
                      409: {"description": "The stored file does not match its recorded sha256"}}
"""What a download answers (job artifacts, and a registered model's files)."""


@router.get("/{job_id}/artifacts/{name:path}", response_class=FileResponse, responses=DOWNLOAD_RESPONSES)
def download_artifact(job: OwnedJob, name: Annotated[str, PathParam(max_length=255)], plane: PlaneDep,
                      if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """The file, with its sha256 as `Repr-Digest` (RFC 9530) and as the ETag; Range requests work.
    The file is checked against its recorded sha256 before it is served."""
    return serve(plane, job.id, name, if_none_match)


def serve(plane: ControlPlane, job_id: str, name: str, if_none_match: str | None) -> Response:
    """Job `job_id`'s artifact `name`, checked against its sha256, with Repr-Digest, ETag and Range."""
    artifact = plane.artifacts.get(job_id, name)
    if artifact is not None and plane.storage.remote is not None:
        return serve_stored(plane, job_id, artifact, if_none_match)
    path = plane.storage.artifact_path(job_id, artifact.name) if artifact is not None else None
    if artifact is None or path is None:
        raise HTTPException(404, f"job {job_id} has no artifact {name!r}")
    try:
        stat = path.stat()
    except OSError:
        raise HTTPException(409, f"artifact {name!r} of job {job_id} is missing from the artifact store; "
                                 "it cannot be served") from None
    if stat.st_size != artifact.size or file_sha256(path, stat) != artifact.sha256:
        log.error("artifact %s of %s does not match its recorded sha256", name, job_id)
        raise HTTPException(409, f"artifact {name!r} of job {job_id} does not match its recorded sha256 "
                                 "(damaged or being rewritten); it is not served")
    headers = _headers(artifact)
    if _not_modified(headers, if_none_match):
        return Response(status_code=304, headers=headers)
    return ArtifactFile(path, filename=artifact.name, headers=headers, stat_result=stat, media_type=_media(name))


def _headers(artifact: Artifact) -> dict[str, str]:
    digest = base64.b64encode(bytes.fromhex(artifact.sha256)).decode()
    return {"ETag": f'"{artifact.sha256}"', "Repr-Digest": f"sha-256=:{digest}:", "Cache-Control": "private, no-cache"}


def _not_modified(headers: dict[str, str], if_none_match: str | None) -> bool:
    return if_none_match is not None and headers["ETag"] in [t.strip() for t in if_none_match.split(",")]


def _media(name: str) -> str:
    return "application/octet-stream" if not name.endswith(".json") else "application/json"


def serve_stored(plane: ControlPlane, job_id: str, artifact: Artifact, if_none_match: str | None) -> Response:
    """An artifact in the object store: checked by its recorded size and sha256 against the
    object's, then streamed (or, with DCL_PRESIGNED_DOWNLOADS, a 307 to a presigned URL: the
    caller's key was checked before, and the URL names this one object for a few minutes)."""
    store = plane.storage.remote
    try:
        key = plane.storage.object_name(job_id, artifact.name)
    except ValueError:
        raise HTTPException(404, f"job {job_id} has no artifact {artifact.name!r}") from None
    found = store.head(key)
    if found is None:
        raise HTTPException(409, f"artifact {artifact.name!r} of job {job_id} is missing from the {store}; "
                                 "it cannot be served")
    if found["size"] != artifact.size or found["sha256"] != artifact.sha256:
        log.error("artifact %s of %s does not match its recorded sha256 in the store", artifact.name, job_id)
        raise HTTPException(409, f"artifact {artifact.name!r} of job {job_id} does not match its recorded sha256 "
                                 "(damaged or being rewritten); it is not served")
    headers = _headers(artifact)
    if _not_modified(headers, if_none_match):
        return Response(status_code=304, headers=headers)
    if plane.settings.presigned_downloads:
        url = store.presign(key, artifact.name, plane.settings.presigned_url_seconds)
        return Response(status_code=307, headers={**headers, "Location": url, "Cache-Control": "no-store"})
    filename = artifact.name.rsplit("/", 1)[-1]
    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return StoredObject(store, key, artifact.size, headers=headers, media_type=_media(artifact.name))
