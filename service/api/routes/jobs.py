"""/v1/jobs: submit, list (filtered, sorted), read, label (PATCH), metrics, cancel, retry, delete.
State changes are the control plane's lifecycle; admission (service/api/admission.py) decides
what is taken."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from dcl_core.jobs import JobSpec
from dcl_core.jobs.base import MAX_TAGS, Tag
from service.api.admission import admit, check_room, resolve_models
from service.api.deps import INT32_MAX, CurrentKey, JobId, OwnedJob, PlaneDep, SettingsDep, too_many
from service.api.schemas import JobPatch, JobPublic, JobsPublic, JobStatus, JobType, MetricsPublic
from service.control.lifecycle import CapReached
from service.control.models import Job
from service.control.plane import ControlPlane

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


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
def create_job(spec: Annotated[JobSpec, Body()], response: Response, owner: CurrentKey,
               plane: PlaneDep, settings: SettingsDep) -> JobPublic:
    """Submit a job: `pretrain` (a TrainConfig), `linear_probe` or `embed` (of a succeeded pretrain job),
    or `sweep` (one pretrain job per grid point, its children: `GET /v1/jobs?parent=ID`)."""
    spec = resolve_models(spec, owner, plane)
    queued = admit(spec, owner, plane)
    try:
        job = plane.lifecycle.submit(owner, spec, max_active=settings.max_active_jobs_per_key)
    except CapReached:  # another submit took the room between admission and this insert
        raise too_many(f"this key has {plane.jobs.count_active(owner)} queued or running jobs and its limit is "
                       f"{settings.max_active_jobs_per_key}; {queued} more would pass it. Wait for some to end "
                       "or cancel some") from None
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return public(plane, job)


def public(plane: ControlPlane, job: Job) -> JobPublic:
    """The job as the API shows it; a parent with its children's counts and progress."""
    if not job.is_parent:
        return JobPublic.from_job(job)
    return JobPublic.from_job(job, plane.jobs.children_summary([job.id])[job.id])


@router.get("", response_model=JobsPublic)
def list_jobs(owner: CurrentKey, plane: PlaneDep,
              status: Annotated[JobStatus | None, Query()] = None,
              type: Annotated[JobType | None, Query()] = None,
              parent: Annotated[str | None, Query(max_length=64, description="Only this job's children.")] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
              tag: Annotated[list[Tag], Query(max_length=MAX_TAGS, description=(
                  "Only jobs with this tag; repeat it for jobs with all of them."))] = [],  # noqa: B006 (FastAPI copies it)
              q: Annotated[str | None, Query(max_length=100, description="Only jobs whose name holds this text (any case).")] = None,
              method: Annotated[str | None, Query(max_length=64, description=(
                  "Only jobs training with this method (config.method)."))] = None,
              encoder: Annotated[str | None, Query(max_length=255, description=(
                  "Only jobs with this encoder: an architecture (config.encoder: resnet18), or a pretrain job's id "
                  "(the probe and embed jobs of that encoder)."))] = None,
              dataset: Annotated[str | None, Query(max_length=255, description=(
                  "Only jobs reading this data: a source (dataset:ID, builtin:digits, torchvision:cifar10) or a dataset id."))] = None,
              sort: Annotated[Literal["created", "-created", "score", "-score"], Query(description=(
                  "created: oldest first; -created: newest first; score / -score: by the primary score, "
                  "jobs without one last."))] = "-created",
              top_level: Annotated[bool, Query(description="Only jobs that are no sweep's member.")] = False,
              ) -> JobsPublic:
    items, total = plane.jobs.list(owner, status=status, type=type, limit=limit, offset=offset, parent=parent,
                                   tags=tag, q=q, method=method, encoder=encoder, dataset=dataset, sort=sort,
                                   top_level=top_level)
    summaries = plane.jobs.children_summary([j.id for j in items if j.is_parent])
    return JobsPublic(items=[JobPublic.from_job(j, summaries.get(j.id)) for j in items],
                      total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(job: OwnedJob, plane: PlaneDep) -> JobPublic:
    """A job; a pretrain job with its `evaluations` (the probe and embed jobs of its encoder)."""
    if job.is_parent:
        return await run_in_threadpool(public, plane, job)
    if job.type == "pretrain":
        return JobPublic.from_job(job, evaluations=await run_in_threadpool(plane.jobs.evaluations, job.id, job.owner))
    return JobPublic.from_job(job)


@router.patch("/{job_id}", response_model=JobPublic, responses={415: {"description": "Not sent as JSON"}},
              dependencies=[Depends(json_body)])
def label_job(job: OwnedJob, patch: JobPatch, plane: PlaneDep) -> JobPublic:
    """Change a job's `name`, `notes` and `tags` (in any state; only the fields sent). `tags` replaces
    them; `add_tags` and `remove_tags` change some without reading them first."""
    labelled = plane.lifecycle.label(job.id, job.owner, add_tags=patch.add_tags, remove_tags=patch.remove_tags,
                                     **patch.changes())
    return public(plane, labelled)


def owned_metrics(plane: ControlPlane, job_id: str, owner: str, since: int, limit: int,
                  max_points: int | None = None) -> tuple[list[dict], bool]:
    """The job's metrics rows (thinned past `max_points`), 404 when it is not the caller's: one
    trip to the thread pool, and the ownership check reads the job's id only (a poll every second
    must not decode its spec)."""
    if not plane.jobs.owns(job_id, owner):
        raise HTTPException(404, f"job {job_id} not found")
    if max_points is not None:
        return plane.metrics.thinned(job_id, since, max_points)
    return plane.metrics.since(job_id, since_step=since, limit=limit), False


@router.get("/{job_id}/metrics", response_model=MetricsPublic, responses={404: {"description": "No such job"}})
async def get_metrics(job_id: JobId, owner: CurrentKey, plane: PlaneDep,
                      since: Annotated[int, Query(ge=0, le=INT32_MAX, description="Only rows with step > since.")] = 0,
                      limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                      max_points: Annotated[int | None, Query(
                          ge=4, le=10_000, description="Thin a longer series to about this many rows per metric "
                          "(each metric's min and max row of every step range, and the last row); `limit` is "
                          "then ignored and the whole series after `since` is covered.")] = None) -> MetricsPublic:
    rows, thinned = await run_in_threadpool(owned_metrics, plane, job_id, owner, since, limit, max_points)
    return MetricsPublic(job_id=job_id, items=rows, next_since=rows[-1]["step"] if rows else since, thinned=thinned)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses={409: {"description": "Already finished"}})
def cancel_job(job: OwnedJob, owner: CurrentKey, plane: PlaneDep) -> JobPublic:
    """A queued job is cancelled at once; a running one stops at its next step (its last checkpoint is kept).
    Cancelling a sweep cancels its children; it ends `cancelled` once they have all stopped."""
    if job.terminal:
        raise HTTPException(409, f"job {job.id} already {job.status}")
    return public(plane, plane.lifecycle.cancel(job.id, owner))


@router.post("/{job_id}/retry", response_model=JobPublic,
             responses={409: {"description": "Not failed or cancelled"}, 429: {"description": "Too many active jobs"}})
def retry_job(job: OwnedJob, plane: PlaneDep) -> JobPublic:
    """Queue a failed or cancelled job again; it resumes from its last checkpoint. For a sweep: its
    failed and cancelled members (the sweep itself may have succeeded without them). A retried
    member puts its sweep back to running."""
    ids = plane.lifecycle.retryable(job)
    if not ids:
        if job.is_parent:
            raise HTTPException(409, f"sweep {job.id} has no failed or cancelled member to retry")
        raise HTTPException(409, f"job {job.id} is {job.status}; only a failed or cancelled job can be retried")
    check_room(plane, job.owner, len(ids))
    return public(plane, plane.lifecycle.retry(job.id, job.owner))


@router.delete("/{job_id}", status_code=204, responses={409: {"description": "Still queued or running"}})
def delete_job(job: OwnedJob, plane: PlaneDep) -> Response:
    """Delete a finished job, its artifacts and metrics; a sweep with its children."""
    plane.lifecycle.delete(job.id, job.owner)
    return Response(status_code=204)
