"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from starlette.concurrency import run_in_threadpool

from service.api.deps import OPERATOR, Viewer
from service.api.schemas import Message
from service.control.models import WorkerSighting
from service.control.queue import broker_ping, queue_depths

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 5.0
DURATION_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


async def _check(fn, *args) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        value = await asyncio.wait_for(run_in_threadpool(fn, *args), CHECK_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported with its reason
        reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
        return {"ok": False, "error": reason[:500]}
    out: dict[str, Any] = {"ok": True, "latency_ms": round(1000 * (time.perf_counter() - started), 1)}
    if isinstance(value, list):
        out["items"] = value
    return out


def worker_nodes(rows: list[WorkerSighting]) -> list[dict]:
    """One entry per worker: a job's pool process reports as NODE/PID, its worker as NODE."""
    nodes: dict[str, dict] = {}
    for row in rows:
        node, _, child = row.name.partition("/")
        entry = nodes.setdefault(node, {"name": node, "seen_at": row.seen_at, "info": {}, "jobs": []})
        entry["seen_at"] = max(entry["seen_at"], row.seen_at)
        info = row.info
        if not child:
            entry["info"] = info
        elif info.get("job"):
            entry["jobs"].append(info["job"])
    return [{**n, "seen_at": n["seen_at"].isoformat()} for n in sorted(nodes.values(), key=lambda n: n["name"])]


@router.get("/readyz", responses={503: {"description": "Database or broker unreachable, or no embedded worker"}})
async def readyz(request: Request, who: Viewer) -> JSONResponse:
    """Ready when the job store and the broker answer (and, under `dcl serve --embedded`, its
    worker is alive; a distributed deployment's workers are counted, not required). With auth on, the reasons and the
    workers (names, processes, jobs) are shown to operator keys only; others get the verdict
    and the number of workers."""
    state = request.app.state
    plane = state.plane
    database, broker, workers = await asyncio.gather(
        _check(plane.db.ping),
        _check(broker_ping, plane.celery),
        _check(plane.workers.seen_within, state.settings.worker_seen_seconds),
    )
    nodes = worker_nodes(workers.pop("items", []))
    embedded = getattr(state, "embedded_worker", None)  # set by `dcl serve --embedded`
    no_worker = embedded is not None and not embedded.alive
    ready = database["ok"] and broker["ok"] and not no_worker
    body = {
        "status": "ready" if ready else "not ready",
        "database": database,
        "broker": broker,
        "workers": {"count": len(nodes), "seen_within_s": state.settings.worker_seen_seconds, "items": nodes},
    }
    if embedded is not None:
        body["workers"]["embedded"] = {"alive": not no_worker, "restarts": embedded.restarts}
    if not ready:
        unreachable = [k for k in ("database", "broker") if not body[k]["ok"]]
        problems = ([", ".join(unreachable) + " unreachable"] if unreachable else []) + (["no worker"] if no_worker else [])
        body["detail"] = "not ready: " + "; ".join(problems)
    if who != OPERATOR:  # host names, process ids, other owners' jobs, connection errors
        body["workers"].pop("items")
        for part in ("database", "broker", "workers"):
            body[part].pop("error", None)
    return JSONResponse(body, status_code=200 if ready else 503)


class JobsCollector:
    """Job counts, queue depths, workers and job durations, read at scrape time."""

    def __init__(self, app_state, owner: str | None = None):
        self.state = app_state
        self.owner = owner
        """Count only this owner's jobs (None: everyone's)."""

    def collect(self):
        plane, settings = self.state.plane, self.state.settings
        jobs = GaugeMetricFamily("dcl_jobs", "Jobs by status", labels=["status"])
        for status, n in plane.jobs.count_by_status(self.owner).items():
            jobs.add_metric([status], n)
        yield jobs
        queues = [settings.gpu_queue, settings.cpu_queue]
        up = GaugeMetricFamily("dcl_broker_up", "1 when the broker answered this scrape")
        depth = GaugeMetricFamily("dcl_queue_depth", "Messages waiting in a queue", labels=["queue"])
        try:
            for name, n in queue_depths(plane.celery, queues).items():
                depth.add_metric([name], n)
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001 - an unreachable broker is a value, not an error
            up.add_metric([], 0)
        yield up
        yield depth
        workers = GaugeMetricFamily("dcl_workers_seen", "Workers seen within worker_seen_seconds")
        workers.add_metric([], len(worker_nodes(plane.workers.seen_within(settings.worker_seen_seconds))))
        yield workers
        durations = HistogramMetricFamily("dcl_job_duration_seconds", "Run time of finished jobs",
                                          labels=["type", "status"])
        grouped: dict[tuple[str, str], list[float]] = {}
        for type_, status, seconds in plane.jobs.durations(owner=self.owner):
            grouped.setdefault((type_, status), []).append(seconds)
        for (type_, status), values in sorted(grouped.items()):
            buckets = [(str(b), sum(v <= b for v in values)) for b in DURATION_BUCKETS]
            buckets.append(("+Inf", len(values)))
            durations.add_metric([type_, status], buckets, sum(values))
        yield durations


def make_registry(app_state) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    registry.register(JobsCollector(app_state))
    latency = Histogram(
        "dcl_http_request_duration_seconds", "Time to the response's first byte",
        ["method", "route", "status"], registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    app_state.latency = latency
    return registry, latency


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
    401: {"model": Message, "description": "Auth is on and no valid key was sent"}})
def metrics(request: Request, who: Viewer) -> Response:
    """Prometheus exposition: jobs by status, queue depth, workers, job durations, request latency.
    With auth on it needs a key; an operator key (DCL_OPERATOR_KEYS) sees every job, any other
    key its own."""
    state = request.app.state
    if who is None:
        raise HTTPException(401, "/metrics needs an API key (an operator key to see every job): send it as "
                                 "`Authorization: Bearer KEY`", headers={"WWW-Authenticate": "Bearer"})
    if who == OPERATOR:
        registry = state.registry
    else:
        registry = CollectorRegistry()
        registry.register(JobsCollector(state, owner=who))
        registry.register(state.latency)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
