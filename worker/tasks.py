"""The one Celery task: run a job, given its id.

The message carries the job id only; the job store row is the truth. A delivery first
claims the job with one compare-and-set (a lease and an attempt count): a duplicate
delivery, or one for a job that is finished, cancelled or held by a live worker, returns
without doing anything. The claimed job then runs in this (pool child) process with a
heartbeat thread keeping the lease, and ends in exactly one of: `store.finish`,
`store.fail`, `store.mark_cancelled` or, when the lease was lost to another worker,
nothing at all (that worker owns the job now).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from dcl_core.errors import UserError
from dcl_core.files import sha256_file
from dcl_core.tracking import TENSORBOARD_DIR, SinkHooks
from service.queue import RUN_JOB, enqueue, queue_for
from service.settings import get_settings
from worker import gpu_memory
from worker.app import app
from worker.checkpoint_artifact import CHECKPOINT_ARTIFACT, publish_checkpoint  # noqa: F401 (re-exported)
from worker.engine import RUNNERS, build_data_env
from worker.hooks import (
    STOP_CANCELLED,
    STOP_LEASE_LOST,
    STOP_TIMEOUT,
    Heartbeat,
    LeaseLost,
    StoreHooks,
)
from worker.leases import dead_sibling
from worker.tracking import job_sinks

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000

_stores: dict[tuple[int, str], Any] = {}


def get_store(settings):
    """This process's job store (one engine per process: pool children never reuse the
    parent's database connections)."""
    from service.store import JobStore

    key = (os.getpid(), settings.database_url)
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = JobStore(settings.database_url)
    return store


def worker_name(hostname: str | None = None) -> str:
    """Who holds a job: the Celery node name and the pool process id."""
    return f"{hostname or socket.gethostname()}/{os.getpid()}"


def runtime_limit_s(job: dict, settings) -> float | None:
    """The tighter of the server cap (DCL_MAX_JOB_RUNTIME_S) and the job's own
    `config.max_runtime_s`; None when neither is set."""
    limits = []
    server_cap = getattr(settings, "max_job_runtime_s", None)
    if server_cap:
        limits.append(float(server_cap))
    config = (job.get("spec") or {}).get("config") or {}
    if isinstance(config, dict) and config.get("max_runtime_s"):
        limits.append(float(config["max_runtime_s"]))
    return min(limits) if limits else None


ARTIFACT_FOLDERS = (TENSORBOARD_DIR,)
"""Sub-folders of the run dir whose files are artifacts too, named `FOLDER/FILE`."""


def list_artifacts(run_dir: Path) -> list[tuple[str, int, str]]:
    """(name, size, sha256) of every file the engine wrote at the top of the run dir and in
    its ARTIFACT_FOLDERS.

    Other sub-folders (checkpoints/) and hidden files (half-written temporaries) are not
    artifacts."""
    artifacts = []
    paths = sorted(run_dir.iterdir())
    for folder in ARTIFACT_FOLDERS:
        if (run_dir / folder).is_dir() and not (run_dir / folder).is_symlink():
            paths += sorted((run_dir / folder).iterdir())
    for path in paths:
        if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
            name = path.relative_to(run_dir).as_posix()
            artifacts.append((name, path.stat().st_size, sha256_file(path)))
    return artifacts


DISK_PROBLEMS = {
    errno.ENOSPC: ("no space left on the", "free space there and resubmit the job"),
    errno.EDQUOT: ("disk quota exceeded on the", "free space there or raise the quota, then resubmit the job"),
    errno.EROFS: ("cannot write to the read-only", "mount it read-write and resubmit the job"),
}


def disk_message(exc: OSError, settings) -> str | None:
    """What to do about a full, over-quota or read-only volume, naming the volume by the setting
    that points at it and the file being written; None for any other OSError."""
    problem = DISK_PROBLEMS.get(exc.errno)
    if problem is None:
        return None
    written = exc.filename2 or exc.filename  # os.replace(src, dst) names the destination second
    volumes = [
        ("artifact volume", "DCL_ARTIFACTS_DIR", settings.artifacts_dir),
        ("cache volume", "DCL_CACHE_DIR", settings.cache_dir),
        ("dataset volume", "DCL_DATASETS_DIR", settings.datasets_dir),
        ("data volume", "DCL_DATA_DIR", settings.data_dir),
    ]
    path = Path(os.path.abspath(os.fsdecode(written))) if written else None
    name, variable, root = next(
        (v for v in volumes if path and v[2] and path.is_relative_to(os.path.abspath(v[2]))), volumes[0]
    )
    what, fix = problem
    target = f" while writing {path}" if path else ""
    return (f"{what} {name} ({variable}={root}){target}: {fix}. Files are written whole or not at all, "
            "so nothing truncated was kept")


def _error_message(exc: BaseException) -> str:
    message = f"{type(exc).__name__}: {exc} (see worker log)"
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "..."


def _user_message(exc: UserError) -> str:
    message = str(exc) or type(exc).__name__
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "..."


def execute_job(job_id: str, *, store, settings, worker: str) -> str:
    """Claim and run one job; returns what happened: skipped, waiting (for GPU memory),
    succeeded, failed, cancelled or lost (the lease went to another worker). A child that ended
    settles its parent when it was the last one running (a sweep's table and plot)."""
    outcome = _execute_job(job_id, store=store, settings=settings, worker=worker)
    if outcome in ("succeeded", "failed", "cancelled"):
        settle_parent_of(job_id, store, settings)
    return outcome


def settle_parent_of(job_id: str, store, settings) -> None:
    from dcl_core.experiments.sweep_plot import plot_accuracy
    from service.sweeps import settle

    try:
        job = store.get_job(job_id)
        if job is not None and job.get("parent_id"):
            settle(store, Path(settings.artifacts_dir), job["parent_id"], plot=plot_accuracy)
    except Exception:  # the child's own outcome is recorded; the reconciler settles the parent later
        log.warning("could not settle the parent of job %s", job_id, exc_info=True)


def _execute_job(job_id: str, *, store, settings, worker: str) -> str:
    current = store.get_job(job_id)
    dead = dead_sibling(current.get("worker"), worker) if current and current.get("status") == "running" else None
    job = store.claim(job_id, worker, settings.lease_seconds, dead_holder=dead)
    if dead and job is not None:
        log.warning("job %s: its process %s died; taken over at once", job_id, dead)
    if job is None:
        log.info("job %s: not claimed by %s (finished, cancelled, unknown or held by a live worker)",
                 job_id, worker)
        return "skipped"
    log.info("job %s (%s): claimed by %s, attempt %s", job_id, job.get("type"), worker, job.get("attempts"))
    waited = wait_for_gpu_memory(job, store=store, settings=settings, worker=worker)
    if waited:
        return waited
    tracking = SinkHooks(None, job_sinks(job, Path(settings.artifacts_dir) / job_id, settings))
    try:
        return _run_claimed(job, store=store, settings=settings, worker=worker, tracking=tracking)
    finally:
        tracking.close(_tracked_end(store, job_id, worker, tracking))


def _tracked_end(store, job_id: str, worker: str, tracking) -> dict | None:
    """What the tracking sinks log at the end: the job's recorded outcome, or None when the
    job is no longer this worker's (lost: its new holder goes on logging)."""
    if not tracking.sinks:
        return None
    try:
        job = store.get_job(job_id)
    except Exception:
        log.warning("job %s: could not read its outcome for the tracking sinks", job_id, exc_info=True)
        return None
    if job is None or job.get("status") not in ("succeeded", "failed", "cancelled"):
        return None
    return {"status": job["status"], "result": job.get("result") or {}, "step": job.get("step"),
            "artifacts": [a["name"] for a in store.artifacts(job_id)]}


def _run_claimed(job: dict, *, store, settings, worker: str, tracking: SinkHooks) -> str:
    job_id = job["id"]
    limit = runtime_limit_s(job, settings)
    started = time.monotonic()
    deadline = started + limit if limit else None
    run_dir = Path(settings.artifacts_dir) / job_id

    with Heartbeat(store, job_id, worker, lease_s=settings.lease_seconds,
                   interval_s=settings.heartbeat_seconds) as heartbeat:
        hooks = StoreHooks(store, job_id, worker, heartbeat=heartbeat, deadline=deadline)
        tracking.primary = hooks
        try:
            runner = RUNNERS.get(job.get("type"))
            if runner is None:
                raise UserError(f"unknown job type {job.get('type')!r}; choose one of {sorted(RUNNERS)}")
            run_dir.mkdir(parents=True, exist_ok=True)
            outcome = runner(job.get("spec") or {}, run_dir, build_data_env(settings), tracking, settings)
        except LeaseLost:
            log.warning("job %s: lease lost at step %s, leaving the job to its new holder", job_id, hooks.step)
            return "lost"
        except UserError as exc:
            log.info("job %s failed: %s", job_id, exc)
            return _end_failed(store, job_id, worker, hooks, _user_message(exc))
        except OSError as exc:
            log.exception("job %s failed writing or reading a file", job_id)
            return _end_failed(store, job_id, worker, hooks, disk_message(exc, settings) or _error_message(exc))
        except Exception as exc:
            log.exception("job %s failed with an unexpected error", job_id)
            return _end_failed(store, job_id, worker, hooks, _error_message(exc))

    reason = hooks.stop_reason if (outcome.stopped or hooks.stop_reason) else None
    if reason == STOP_LEASE_LOST or heartbeat.lost.is_set():
        log.warning("job %s: lease lost, leaving the job to its new holder", job_id)
        return "lost"
    if reason == STOP_CANCELLED:
        store.mark_cancelled(job_id, worker, publish_checkpoint(run_dir))
        log.info("job %s cancelled at step %s", job_id, hooks.step)
        return "cancelled"
    if reason == STOP_TIMEOUT:
        message = (f"the job ran past its maximum run time of {limit:g} s "
                   "(config.max_runtime_s or the server's DCL_MAX_JOB_RUNTIME_S); stopped at step "
                   f"{hooks.step}; its last checkpoint is kept")
        store.fail(job_id, worker, message, publish_checkpoint(run_dir))
        return "failed"
    if outcome.stopped:  # stopped, but not by us: treat it as a failure rather than a success
        store.fail(job_id, worker, "the engine stopped before the end without a reason (see worker log)")
        return "failed"

    artifacts = list_artifacts(run_dir)
    result = dict(outcome.result)
    result.setdefault("run_time_s", round(time.monotonic() - started, 3))
    store.finish(job_id, worker, result, artifacts)
    log.info("job %s succeeded in %.1f s: %s", job_id, time.monotonic() - started,
             ", ".join(name for name, _, _ in artifacts))
    return "succeeded"


def wait_for_gpu_memory(job: dict, *, store, settings, worker: str, celery=None) -> str | None:
    """None when the job may start; else what became of it: `waiting` (put back on the queue,
    tried again in DCL_GPU_WAIT_SECONDS: other jobs hold the GPU's memory) or `failed` (the
    GPU is too small even when empty)."""
    job_id = job["id"]
    try:
        verdict, detail = gpu_memory.check(job.get("spec") or {}, settings.gpu_job_min_free_mib)
    except Exception:  # a broken driver shows itself, with its own message, when the job runs
        log.warning("job %s: could not read the GPU's free memory", job_id, exc_info=True)
        return None
    if verdict == gpu_memory.NEVER:
        store.fail(job_id, worker, detail)
        return "failed"
    if verdict == gpu_memory.FITS:
        return None
    store.release(job_id, worker)
    log.info("job %s: waiting for GPU memory (%s); tried again in %g s", job_id, detail, settings.gpu_wait_seconds)
    try:
        enqueue(job_id, job.get("queue") or queue_for(job.get("spec") or {}, settings), celery or app,
                countdown=settings.gpu_wait_seconds)
    except Exception:  # it is `queued` in the store: the reconciler sends it again
        log.warning("job %s: could not put it back on the queue", job_id, exc_info=True)
    return "waiting"


def _end_failed(store, job_id: str, worker: str, hooks: StoreHooks, message: str) -> str:
    if hooks.stop_reason == STOP_LEASE_LOST:
        return "lost"
    store.fail(job_id, worker, message)
    return "failed"


@app.task(name=RUN_JOB, bind=True)
def run_job(self, job_id: str) -> str:
    """Celery entry point. Never raises: every outcome is recorded in the job store, so
    the message is acknowledged once the job has ended."""
    settings = get_settings()
    return execute_job(job_id, store=get_store(settings), settings=settings,
                       worker=worker_name(self.request.hostname))
