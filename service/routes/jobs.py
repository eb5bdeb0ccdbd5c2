"""/v1/jobs: submit, list, read, follow (metrics, Server-Sent Events), cancel, retry, delete, artifacts."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Iterator

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path as PathParam, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from dcl_core.data.catalog import SPLIT_SIZES, missing_torchvision_files
from dcl_core.config import DatasetSpec, TrainConfig
from dcl_core.jobtypes import JOB_TYPES, JobSpec
from dcl_core.files import sha256_file
from service.deps import (
    INT32_MAX, CeleryDep, CurrentKey, FieldError, JobId, OwnedJob, SettingsDep, StoreDep, too_many,
)
from service.guards import has_nul
from service.metrics_thin import metrics_thinned
from service.queue import enqueue, multi_device_queue, queue_for
from service.schemas import ArtifactPublic, ArtifactsPublic, JobPublic, JobsPublic, JobStatus, JobType, MetricsPublic
from service.store import PARENT_TYPES, TERMINAL, JobStore
from service.sweeps import settle

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def invalid(field: str, message: str) -> FieldError:
    return FieldError(["body", *field.split(".")], message)


def dataset_fields(model: BaseModel, path: str = "") -> Iterator[tuple[str, DatasetSpec]]:
    """Every DatasetSpec inside a job request, with its field path (`config.dataset`)."""
    if isinstance(model, DatasetSpec):
        yield path, model
        return
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from dataset_fields(value, f"{path}.{name}" if path else name)


def check_sources(spec: BaseModel, owner: str, store: JobStore, settings) -> None:
    """Each dataset the job names must be readable where it runs, and a pretraining batch
    must fit in its dataset when the service knows the size: else the job could only fail."""
    sizes: dict[str, int] = {}
    for path, dataset in dataset_fields(spec):
        where = f"{path}.source"
        if dataset.kind == "path":
            raise invalid(where, f"{dataset.source!r} is a local path, which the service cannot read; "
                                 "upload it with POST /v1/datasets and name it as dataset:ID")
        size = SPLIT_SIZES.get(dataset.source, {}).get(dataset.split)
        if dataset.kind == "dataset":
            dataset_id = dataset.source.partition(":")[2]
            row = store.get_dataset(dataset_id, owner)
            if row is None:
                raise invalid(where, f"dataset {dataset_id} not found; upload it with POST /v1/datasets")
            size = (row.get("summary") or {}).get("num_images")
        if dataset.kind == "torchvision":
            if dataset.download and not settings.allow_download:
                raise invalid(f"{path}.download", "this server does not download datasets (DCL_ALLOW_DOWNLOAD "
                                                  "is off); upload the data with POST /v1/datasets instead")
            name = dataset.source.partition(":")[2]
            if not dataset.download and missing_torchvision_files(settings.torchvision_root, name, dataset.split):
                raise invalid(where, f"{dataset.source} ({dataset.split} split) is not on this server: ask its "
                                     f"operator to put torchvision's {name} files in the torchvision folder "
                                     "(DCL_TORCHVISION_ROOT)"
                                     + (", or set download: true" if settings.allow_download else "")
                                     + ", or upload the data with POST /v1/datasets")
        if isinstance(size, int):
            sizes[path] = min(size, dataset.max_images or size)
    config = getattr(spec, "config", None)
    images = sizes.get("config.dataset")
    if isinstance(config, TrainConfig) and images is not None and config.batch_size > images:
        raise invalid("config.batch_size", f"{config.batch_size} is more than the {images} images of "
                                           f"{config.dataset.source}; use batch_size <= {images}")


def non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinity in a dumped request (JSON cannot carry them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "body"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = non_finite(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def check_encoder_job(spec: BaseModel, owner: str, store: JobStore) -> None:
    encoder_job = getattr(spec, "encoder_job", None)
    if encoder_job is None:
        return
    job = store.get_job(encoder_job, owner)
    if job is None:
        raise HTTPException(404, f"encoder_job {encoder_job} not found")
    if job["type"] != "pretrain":
        raise HTTPException(409, f"encoder_job {encoder_job} is a {job['type']} job; name a pretrain job")
    if job["status"] != "succeeded":
        raise HTTPException(409, f"encoder_job {encoder_job} is {job['status']}; "
                                 "name a pretrain job that succeeded (wait for it to finish)")


def check_devices(spec: dict, queue: str, store: JobStore, settings) -> None:
    """A job on N > 1 devices needs a worker that consumes its queue (one with N or more devices):
    it waits for one that is busy, and is refused when no such worker has been seen lately."""
    devices = int((spec.get("resources") or {}).get("gpus") or 1)
    if devices <= 1:
        return
    base = queue.rsplit("-x", 1)[0]
    most = 0
    for worker in store.workers_seen(settings.worker_seen_seconds):
        queues = str((worker.get("info") or {}).get("queues") or "").split(",")
        if queue in queues:
            return
        most = max([most] + [n for n in range(1, 65) if multi_device_queue(base, n) in queues])
    kind = "GPU" if base == settings.gpu_queue else "device"
    raise invalid("resources.gpus", (
        f"no worker can run a job on {devices} {kind}s: the workers seen in the last "
        f"{settings.worker_seen_seconds:g} s offer at most {most} on the {base!r} queue. Lower resources.gpus, "
        f"or start a worker with that many (dcl worker --gpus {','.join(str(i) for i in range(devices))})"))


async def json_body(request: Request) -> None:
    """A job is JSON: without the content type FastAPI would not parse it (a guard against
    cross-site form posts), and the error would be a puzzling "should be a valid dictionary"."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise HTTPException(415, f"send the job as JSON with `Content-Type: application/json` "
                                 f"(got {content_type or 'no content type'!s:.100})")


@router.post("", status_code=202, response_model=JobPublic, dependencies=[Depends(json_body)],
             responses={404: {"description": "encoder_job not found"}, 409: {"description": "encoder_job not usable"},
                        415: {"description": "Not sent as JSON"},
                        429: {"description": "Too many active jobs"}})
def create_job(spec: Annotated[JobSpec, Body()], request: Request, response: Response, owner: CurrentKey,
               store: StoreDep, settings: SettingsDep, celery: CeleryDep) -> JobPublic:
    """Submit a job: `pretrain` (a TrainConfig), `linear_probe` or `embed` (of a succeeded pretrain job),
    or `sweep` (one pretrain job per grid point, its children: `GET /v1/jobs?parent=ID`)."""
    dumped = spec.model_dump(exclude={"type"})
    bad = non_finite(dumped)
    if bad:
        raise invalid(bad, "must be a finite number (not NaN or infinity)")
    bad = has_nul(dumped)
    if bad is not None:
        raise invalid(bad or "body", "contains a NUL byte (\\0); remove it")
    kind = JOB_TYPES[spec.type]
    members = spec.child_specs() if kind.has_children else []
    if members:
        check_members(spec.points(), members, owner, store, settings)
    else:
        check_sources(spec, owner, store, settings)
    check_encoder_job(spec, owner, store)
    check_room(store, owner, settings, len(members) or 1)
    stored = store.stored_bytes(owner)
    if stored >= settings.max_stored_bytes_per_key:
        raise too_many(f"this key stores {stored} bytes, its limit is {settings.max_stored_bytes_per_key}; "
                       "delete datasets you no longer need", 3600)
    body = spec.model_dump(mode="json")
    if kind.has_children:
        bodies = [m.model_dump(mode="json") for m in members]
        for member in bodies:
            check_devices(member, queue_for(member, settings), store, settings)
        made = store.create_parent(owner, spec.type, body, [(b["type"], b, queue_for(b, settings)) for b in bodies],
                                   max_active=settings.max_active_jobs_per_key)
        if made is None:  # another submit took the room between the check above and this insert
            raise too_many(f"this key's limit is {settings.max_active_jobs_per_key} queued or running jobs; "
                           f"{len(members)} more would pass it. Wait for some to end or make the sweep smaller")
        job, children = made
    else:
        queue = queue_for(body, settings)
        check_devices(body, queue, store, settings)
        job = store.create_job(owner, spec.type, body, queue=queue, max_active=settings.max_active_jobs_per_key)
        if job is None:
            raise too_many(f"this key has {store.count_active(owner)} queued or running jobs and its limit is "
                           f"{settings.max_active_jobs_per_key}; wait for one to end or cancel one")
        children = [job]
    send(children, celery, request.app.state.resender)
    response.headers["Location"] = f"/v1/jobs/{job['id']}"
    return public(store, job)


def check_members(points: list[dict], members: list[BaseModel], owner: str, store: JobStore, settings) -> None:
    """A sweep's members, checked like jobs of their own; a problem is named by its grid point."""
    for params, member in zip(points, members):
        try:
            check_sources(member, owner, store, settings)
        except FieldError as exc:
            where = ".".join(str(part) for part in exc.loc if part != "body")
            raise invalid("grid", f"grid point {json.dumps(params)}: {where}: {exc.message}") from None


def check_room(store: JobStore, owner: str, settings, wanted: int) -> None:
    """429 unless `wanted` more queued jobs fit under the key's active-jobs cap (children count)."""
    active, cap = store.count_active(owner), settings.max_active_jobs_per_key
    if active + wanted > cap:
        more = f"{wanted} more jobs" if wanted > 1 else "another job"
        raise too_many(f"this key has {active} queued or running jobs and its limit is {cap}; {more} would pass "
                       "it. Wait for some to end, cancel some, or make the sweep smaller")


def send(jobs: list[dict], celery, resender) -> None:
    for job in jobs:
        if not job.get("queue"):
            continue
        try:
            enqueue(job["id"], job["queue"], celery)
        except Exception as exc:  # the job stays queued in the store; sent again once the broker is back
            log.warning("could not enqueue %s (%s: %s); will send it when the broker is back",
                        job["id"], type(exc).__name__, exc)
            resender.add(job["id"], job["queue"])


def public(store: JobStore, job: dict) -> JobPublic:
    """The job as the API shows it; a parent with its children's counts and progress."""
    if job["type"] not in PARENT_TYPES:
        return JobPublic.from_row(job)
    return JobPublic.from_row(job, store.children_summary([job["id"]])[job["id"]])


@router.get("", response_model=JobsPublic)
def list_jobs(owner: CurrentKey, store: StoreDep,
              status: Annotated[JobStatus | None, Query()] = None,
              type: Annotated[JobType | None, Query()] = None,
              parent: Annotated[str | None, Query(max_length=64, description="Only this job's children.")] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0) -> JobsPublic:
    items, total = store.list_jobs(owner, status=status, type=type, limit=limit, offset=offset, parent=parent)
    summaries = store.children_summary([r["id"] for r in items if r["type"] in PARENT_TYPES])
    return JobsPublic(items=[JobPublic.from_row(r, summaries.get(r["id"])) for r in items],
                      total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(job: OwnedJob, store: StoreDep) -> JobPublic:
    if job["type"] in PARENT_TYPES:
        return await run_in_threadpool(public, store, job)
    return JobPublic.from_row(job)


def owned_metrics(store: JobStore, job_id: str, owner: str, since: int, limit: int,
                  max_points: int | None = None) -> tuple[list[dict], bool]:
    """The job's metrics rows (thinned past `max_points`), 404 when it is not the caller's: one
    trip to the thread pool, and the ownership check reads the job's id only (a poll every second
    must not decode its spec)."""
    if not store.owns_job(job_id, owner):
        raise HTTPException(404, f"job {job_id} not found")
    if max_points is not None:
        return metrics_thinned(store, job_id, since, max_points)
    return store.metrics(job_id, since_step=since, limit=limit), False


@router.get("/{job_id}/metrics", response_model=MetricsPublic, responses={404: {"description": "No such job"}})
async def get_metrics(job_id: JobId, owner: CurrentKey, store: StoreDep,
                      since: Annotated[int, Query(ge=0, le=INT32_MAX, description="Only rows with step > since.")] = 0,
                      limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                      max_points: Annotated[int | None, Query(
                          ge=4, le=10_000, description="Thin a longer series to about this many rows per metric "
                          "(each metric's min and max row of every step range, and the last row); `limit` is "
                          "then ignored and the whole series after `since` is covered.")] = None) -> MetricsPublic:
    rows, thinned = await run_in_threadpool(owned_metrics, store, job_id, owner, since, limit, max_points)
    return MetricsPublic(job_id=job_id, items=rows, next_since=rows[-1]["step"] if rows else since, thinned=thinned)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses={409: {"description": "Already finished"}})
def cancel_job(job: OwnedJob, owner: CurrentKey, store: StoreDep, settings: SettingsDep) -> JobPublic:
    """A queued job is cancelled at once; a running one stops at its next step (its last checkpoint is kept).
    Cancelling a sweep cancels its children; it ends `cancelled` once they have all stopped."""
    if job["status"] in TERMINAL:
        raise HTTPException(409, f"job {job['id']} already {job['status']}")
    job = store.cancel(job["id"], owner) or job
    if job["type"] in PARENT_TYPES and settle(store, settings.artifacts_dir, job["id"]):
        job = store.get_job(job["id"]) or job
    return public(store, job)


@router.post("/{job_id}/retry", response_model=JobPublic,
             responses={409: {"description": "Not failed or cancelled"}, 429: {"description": "Too many active jobs"}})
def retry_job(job: OwnedJob, request: Request, store: StoreDep, settings: SettingsDep, celery: CeleryDep) -> JobPublic:
    """Queue a failed or cancelled job again; it resumes from its last checkpoint. For a sweep: its
    failed and cancelled members (the sweep itself may have succeeded without them). A retried
    member puts its sweep back to running."""
    if job["type"] in PARENT_TYPES:
        ids = [c["id"] for c in store.children(job["id"]) if c["status"] in ("failed", "cancelled")]
        if not ids:
            raise HTTPException(409, f"sweep {job['id']} has no failed or cancelled member to retry")
    elif job["status"] in ("failed", "cancelled"):
        ids = [job["id"]]
    else:
        raise HTTPException(409, f"job {job['id']} is {job['status']}; only a failed or cancelled job can be retried")
    check_room(store, job["owner"], settings, len(ids))
    retried = store.retry(ids)
    send([j for j in (store.get_job(i) for i in retried) if j is not None], celery, request.app.state.resender)
    return public(store, store.get_job(job["id"]) or job)


@router.delete("/{job_id}", status_code=204, responses={409: {"description": "Still queued or running"}})
def delete_job(job: OwnedJob, store: StoreDep, settings: SettingsDep) -> Response:
    """Delete a finished job, its artifacts and metrics; a sweep with its children."""
    deleted = store.delete_job(job["id"], job["owner"])
    if deleted is None:
        raise HTTPException(409, f"job {job['id']} (or one of its children) is queued or running; cancel it first")
    for job_id in deleted:
        shutil.rmtree(Path(settings.artifacts_dir) / job_id, ignore_errors=True)
    return Response(status_code=204)


# ---- Server-Sent Events ---------------------------------------------------------------


def sse(event: str, data: Any, id: int | None = None) -> str:
    lines = [f"id: {id}"] if id is not None else []
    lines += [f"event: {event}", "data: " + json.dumps(data, separators=(",", ":"), default=str)]
    return "\n".join(lines) + "\n\n"


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`metrics` events (id: step), `status` events, a final `end` event"}})
async def job_events(
    job: OwnedJob, request: Request, store: StoreDep, settings: SettingsDep,
    since: Annotated[int, Query(ge=0, le=INT32_MAX, description="Start after this step (Last-Event-ID wins).")] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32,
                                                description="The last step seen (an event's id).")] = None,
) -> StreamingResponse:
    """A live stream until the job ends: `metrics` rows with `id: STEP` (reconnect with
    Last-Event-ID to resume), `status` when the job changes, and `end` with the final job.
    A stream also ends, without `end`, after DCL_SSE_MAX_STREAM_SECONDS: reconnect to go on."""
    cursor = since
    if last_event_id and last_event_id.strip().isdigit():
        cursor = int(last_event_id.strip())
        if cursor > INT32_MAX:  # checked before the stream starts: a 200 could not take it back
            raise FieldError(["header", "Last-Event-ID"], f"must be a step, at most {INT32_MAX}")
    return StreamingResponse(
        _events(job["id"], cursor, request, store, settings.sse_poll_seconds, settings.sse_keepalive_seconds,
                settings.sse_max_stream_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _job_and_metrics(store: JobStore, job_id: str, since: int) -> tuple[dict | None, list[dict], JobPublic | None]:
    job = store.get_job(job_id)
    return job, store.metrics(job_id, since_step=since, limit=1000), public(store, job) if job else None


async def _events(job_id: str, cursor: int, request: Request, store: JobStore,
                  poll_s: float, keepalive_s: float, max_s: float) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    last_state = None
    last_sent = started = time.monotonic()
    while time.monotonic() - started < max_s:  # then the client reconnects (Last-Event-ID)
        job, rows, shown = await run_in_threadpool(_job_and_metrics, store, job_id, cursor)
        if job is None:  # deleted underneath us
            yield sse("end", {"detail": f"job {job_id} not found"})
            return
        for row in rows:
            cursor = row["step"]
            yield sse("metrics", row, id=cursor)
        shown_json = shown.model_dump(mode="json")
        state = (job["status"], job["step"], job["epoch"], job["attempts"], job["worker"],
                 job["cancel_requested"], job["error"], shown_json["children"], shown_json["progress"]["step"])
        if state != last_state:
            last_state = state
            yield sse("status", shown_json)
            last_sent = time.monotonic()
        elif rows:
            last_sent = time.monotonic()
        if job["status"] in TERMINAL and len(rows) < 1000:
            yield sse("end", shown_json)
            return
        if time.monotonic() - last_sent >= keepalive_s:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(poll_s)


# ---- artifacts ------------------------------------------------------------------------


def artifact_url(job_id: str, name: str) -> str:
    return f"/v1/jobs/{job_id}/artifacts/{name}"


@router.get("/{job_id}/artifacts", response_model=ArtifactsPublic)
def list_artifacts(job: OwnedJob, store: StoreDep) -> ArtifactsPublic:
    items = [ArtifactPublic(**a, url=artifact_url(job["id"], a["name"])) for a in store.artifacts(job["id"])]
    return ArtifactsPublic(job_id=job["id"], items=items)


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


@router.get("/{job_id}/artifacts/{name:path}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}, "application/json": {}}},
                       400: {"description": "Malformed Range header"},
                       416: {"description": "Range not satisfiable"},
                       206: {"description": "Partial content (Range)"}, 304: {"description": "Not modified"},
                       404: {"description": "No such artifact"},
                       409: {"description": "The stored file does not match its recorded sha256"}})
def download_artifact(job: OwnedJob, name: Annotated[str, PathParam(max_length=255)],
                      store: StoreDep, settings: SettingsDep,
                      if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """The file, with its sha256 as `Repr-Digest` (RFC 9530) and as the ETag; Range requests work.
    The file is checked against its recorded sha256 before it is served."""
    artifact = store.get_artifact(job["id"], name)
    if artifact is None:
        raise HTTPException(404, f"job {job['id']} has no artifact {name!r}")
    folder = (Path(settings.artifacts_dir) / job["id"]).resolve()
    path = (folder / artifact["name"]).resolve()
    if path.parent != folder and folder not in path.parents:
        raise HTTPException(404, f"job {job['id']} has no artifact {name!r}")
    try:
        stat = path.stat()
    except OSError:
        raise HTTPException(409, f"artifact {name!r} of job {job['id']} is missing from the artifact store; "
                                 "it cannot be served") from None
    if stat.st_size != artifact["size"] or file_sha256(path, stat) != artifact["sha256"]:
        log.error("artifact %s of %s does not match its recorded sha256", name, job["id"])
        raise HTTPException(409, f"artifact {name!r} of job {job['id']} does not match its recorded sha256 "
                                 "(damaged or being rewritten); it is not served")
    etag = f'"{artifact["sha256"]}"'
    digest = base64.b64encode(bytes.fromhex(artifact["sha256"])).decode()
    headers = {"ETag": etag, "Repr-Digest": f"sha-256=:{digest}:", "Cache-Control": "private, no-cache"}
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return ArtifactFile(path, filename=artifact["name"], headers=headers, stat_result=stat,
                        media_type="application/octet-stream" if not name.endswith(".json") else "application/json")
