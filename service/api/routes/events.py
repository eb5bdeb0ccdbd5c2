"""/v1/jobs/{id}/events: a job's progress as Server-Sent Events until it ends, resumable with
Last-Event-ID (the step of the last metrics row seen)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import INT32_MAX, FieldError, OwnedJob, PlaneDep, SettingsDep
from service.api.routes.jobs import public
from service.api.schemas import JobPublic
from service.control.models import Job
from service.control.plane import ControlPlane

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def sse(event: str, data: Any, id: int | None = None) -> str:
    lines = [f"id: {id}"] if id is not None else []
    lines += [f"event: {event}", "data: " + json.dumps(data, separators=(",", ":"), default=str)]
    return "\n".join(lines) + "\n\n"


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`metrics` events (id: step), `status` events, a final `end` event"}})
async def job_events(
    job: OwnedJob, request: Request, plane: PlaneDep, settings: SettingsDep,
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
        _events(job.id, cursor, request, plane, settings.sse_poll_seconds, settings.sse_keepalive_seconds,
                settings.sse_max_stream_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _job_and_metrics(plane: ControlPlane, job_id: str, since: int) -> tuple[Job | None, list[dict], JobPublic | None]:
    job = plane.jobs.get(job_id)
    return job, plane.metrics.since(job_id, since_step=since, limit=1000), public(plane, job) if job else None


async def _events(job_id: str, cursor: int, request: Request, plane: ControlPlane,
                  poll_s: float, keepalive_s: float, max_s: float) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    last_state = None
    last_sent = started = time.monotonic()
    while time.monotonic() - started < max_s:  # then the client reconnects (Last-Event-ID)
        job, rows, shown = await run_in_threadpool(_job_and_metrics, plane, job_id, cursor)
        if job is None:  # deleted underneath us
            yield sse("end", {"detail": f"job {job_id} not found"})
            return
        for row in rows:
            cursor = row["step"]
            yield sse("metrics", row, id=cursor)
        shown_json = shown.model_dump(mode="json")
        state = (job.status, job.step, job.epoch, job.attempts, job.worker, job.cancel_requested, job.error,
                 shown_json["children"], shown_json["progress"]["step"])
        if state != last_state:
            last_state = state
            yield sse("status", shown_json)
            last_sent = time.monotonic()
        elif rows:
            last_sent = time.monotonic()
        if job.terminal and len(rows) < 1000:
            yield sse("end", shown_json)
            return
        if time.monotonic() - last_sent >= keepalive_s:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(poll_s)
