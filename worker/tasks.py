"""The one Celery task: run a job, given its id.

The message carries the job id only; the job store row is the truth. A delivery first claims
the job (`lifecycle.claim`, one compare-and-set with a lease and an attempt count): a duplicate
delivery, or one for a job that is finished, cancelled or held by a live worker, returns without
doing anything. The claimed job then runs in this (pool child) process with a heartbeat thread
keeping the lease, and ends in exactly one of `succeed`, `fail`, `stopped` or, when the lease
was lost to another worker, nothing at all (that worker owns the job now).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from pathlib import Path

from dcl_core.errors import UserError
from dcl_core.tracking import SinkHooks
from dcl_core.training.paths import CHECKPOINT, METRICS
from service.control.lifecycle import Refused
from service.control.objectstore import StoreUnavailable
from service.control.models import Job
from service.control.plane import ControlPlane
from service.control.queue import RUN_JOB
from service.control.settings import get_settings
from worker import gpu_memory, shutdown
from worker.app import app
from worker.checkpoint_upload import CheckpointUploader
from worker.hooks import (STOP_CANCELLED, STOP_LEASE_LOST, STOP_SHUTDOWN, STOP_TIMEOUT, Heartbeat, JobHooks,
                          LeaseLost)
from worker.leases import dead_sibling
from worker.runners import RUNNERS, Run, build_data_env, load_runners
from worker.tracking import job_sinks

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000

load_runners()

_planes: dict[tuple[int, str], ControlPlane] = {}


def get_plane(settings) -> ControlPlane:
    """This process's control plane (one database engine per process: pool children never reuse
    the parent's connections). Sweeps settled here get their plot (matplotlib is a worker's)."""
    key = (os.getpid(), settings.database_url)
    plane = _planes.get(key)
    if plane is None:
        from dcl_core.experiments.sweep_plot import plot_accuracy

        plane = _planes[key] = ControlPlane(settings, celery=app, plot=plot_accuracy)
    return plane


def worker_name(hostname: str | None = None) -> str:
    """Who holds a job: the Celery node name and the pool process id."""
    return f"{hostname or socket.gethostname()}/{os.getpid()}"


def runtime_limit_s(job: Job, settings) -> float | None:
    """The tighter of the server cap (DCL_MAX_JOB_RUNTIME_S) and the job's own `max_runtime_s`."""
    limits = [float(x) for x in (settings.max_job_runtime_s, job.spec.max_runtime_s) if x]
    return min(limits) if limits else None


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


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 3] + "..."


def _error_message(exc: BaseException) -> str:
    return _clip(f"{type(exc).__name__}: {exc} (see worker log)")


def execute_job(job_id: str, *, plane: ControlPlane, worker: str) -> str:
    """Claim and run one job; returns what happened: skipped, waiting (for GPU memory),
    succeeded, failed, cancelled, released (the worker is shutting down) or lost (the lease went
    to another worker)."""
    lifecycle = plane.lifecycle
    if shutdown.requested():  # Celery still hands out messages while it shuts down: leave the job queued
        log.info("job %s: not claimed, this worker is shutting down (the next one sends it again)", job_id)
        return "skipped"
    current = plane.jobs.get(job_id)
    dead = dead_sibling(current.worker, worker) if current is not None and current.status == "running" else None
    try:
        job = lifecycle.claim(job_id, worker, dead_holder=dead)
    except Refused as exc:
        log.info("job %s: not claimed by %s (%s)", job_id, worker, exc)
        return "skipped"
    if dead:
        log.warning("job %s: its process %s died; taken over at once", job_id, dead)
    log.info("job %s (%s): claimed by %s, attempt %s", job_id, job.type, worker, job.attempts)
    waited = wait_for_gpu_memory(job, plane=plane, worker=worker)
    if waited:
        return waited
    tracking = SinkHooks(None, job_sinks(job, plane.storage.run_dir(job_id), plane.settings))
    try:
        return _run_claimed(job, plane=plane, worker=worker, tracking=tracking)
    finally:
        tracking.close(_tracked_end(plane, job_id, tracking))


def _tracked_end(plane: ControlPlane, job_id: str, tracking) -> dict | None:
    """What the tracking sinks log at the end: the job's recorded outcome, or None when the job is
    no longer this worker's (lost: its new holder goes on logging)."""
    if not tracking.sinks:
        return None
    try:
        job = plane.jobs.get(job_id)
    except Exception:
        log.warning("job %s: could not read its outcome for the tracking sinks", job_id, exc_info=True)
        return None
    if job is None or not job.terminal:
        return None
    return {"status": job.status, "result": job.result or {}, "step": job.step,
            "artifacts": [a.name for a in plane.artifacts.list(job_id)]}


def _run_claimed(job: Job, *, plane: ControlPlane, worker: str, tracking: SinkHooks) -> str:
    lifecycle, settings = plane.lifecycle, plane.settings
    limit = runtime_limit_s(job, settings)
    started = time.monotonic()
    deadline = started + limit if limit else None
    run_dir = plane.storage.run_dir(job.id)

    with Heartbeat(lifecycle, job.id, worker, lease_s=settings.lease_seconds,
                   interval_s=settings.heartbeat_seconds) as heartbeat:
        hooks = JobHooks(lifecycle, job.id, worker, heartbeat=heartbeat, deadline=deadline)
        tracking.primary = hooks
        try:
            runner = RUNNERS.get(job.type)
            if runner is None:
                raise UserError(f"job type {job.type!r} has no runner on this worker; choose one of {sorted(RUNNERS)}")
            run_dir.mkdir(parents=True, exist_ok=True)
            if plane.storage.remote is not None:
                hooks.uploader = prepare_remote(job, plane, run_dir)
            outcome = runner(job.spec, Run(run_dir, build_data_env(settings), tracking, plane.storage))
            if not outcome.stopped and not hooks.stop_reason:
                files = plane.storage.save_job_files(job.id)  # uploaded while the lease is still renewed
        except LeaseLost:
            log.warning("job %s: lease lost at step %s, leaving the job to its new holder", job.id, hooks.step)
            return "lost"
        except UserError as exc:
            log.info("job %s failed: %s", job.id, exc)
            return _end_failed(lifecycle, job.id, worker, hooks, _clip(str(exc) or type(exc).__name__))
        except StoreUnavailable as exc:
            log.error("job %s failed: %s", job.id, exc)
            return _end_failed(lifecycle, job.id, worker, hooks, f"{exc}; the job can be retried once it is back")
        except OSError as exc:
            log.exception("job %s failed writing or reading a file", job.id)
            return _end_failed(lifecycle, job.id, worker, hooks, disk_message(exc, settings) or _error_message(exc))
        except Exception as exc:
            log.exception("job %s failed with an unexpected error", job.id)
            return _end_failed(lifecycle, job.id, worker, hooks, _error_message(exc))
        finally:
            if hooks.uploader is not None:
                hooks.uploader.close()

    reason = hooks.stop_reason if (outcome.stopped or hooks.stop_reason) else None
    try:
        if reason == STOP_LEASE_LOST or heartbeat.lost.is_set():
            log.warning("job %s: lease lost, leaving the job to its new holder", job.id)
            return "lost"
        if reason == STOP_CANCELLED:
            lifecycle.stopped(job.id, worker=worker)
            log.info("job %s cancelled at step %s", job.id, hooks.step)
            return "cancelled"
        if reason == STOP_SHUTDOWN:
            return _give_back(lifecycle, job.id, worker, hooks)
        if reason == STOP_TIMEOUT:
            lifecycle.fail(job.id, f"the job ran past its maximum run time of {limit:g} s (config.max_runtime_s or "
                                   f"the server's DCL_MAX_JOB_RUNTIME_S); stopped at step {hooks.step}; its last "
                                   "checkpoint is kept", worker=worker, keep_checkpoint=True)
            return "failed"
        if outcome.stopped:  # stopped, but not by us: a failure rather than a success
            lifecycle.fail(job.id, "the engine stopped before the end without a reason (see worker log)", worker=worker)
            return "failed"
        result = dict(outcome.result)
        tracked = [w for sink in tracking.sinks for w in getattr(sink, "warnings", list)()]
        if tracked:
            result["warnings"] = list(result.get("warnings") or []) + tracked
        result.setdefault("run_time_s", round(time.monotonic() - started, 3))
        lifecycle.succeed(job.id, worker, result, files)
    except Refused as exc:  # the lease ran out at the very end: the new holder finishes it
        log.warning("job %s: %s", job.id, exc)
        return "lost"
    log.info("job %s succeeded in %.1f s: %s", job.id, time.monotonic() - started, ", ".join(f.name for f in files))
    return "succeeded"


def prepare_remote(job: Job, plane: ControlPlane, run_dir: Path) -> CheckpointUploader:
    """With an object store: the job's datasets in this machine's cache, the newest uploaded
    checkpoint in an empty run folder (the job ran on another machine before), and the uploader
    of the checkpoints this run makes."""
    for dataset_id in dataset_ids(job.spec_data):
        dataset = plane.datasets.get(dataset_id)
        if dataset is not None:  # a missing one fails in the engine, with its message
            plane.storage.dataset_folder(dataset.id, dataset.sha256)
    if plane.storage.fetch_checkpoint(job.id, run_dir / CHECKPOINT, run_dir / METRICS):
        log.info("job %s: resuming from the checkpoint uploaded by its previous worker", job.id)
    return CheckpointUploader(plane.storage, job.id, run_dir, METRICS)


def dataset_ids(spec) -> set[str]:
    """The ids of the uploaded datasets (`dataset:ID`) a spec names, wherever it names them."""
    if isinstance(spec, str):
        return {spec.partition(":")[2]} if spec.startswith("dataset:") else set()
    if isinstance(spec, dict):
        spec = list(spec.values())
    if isinstance(spec, list):
        return set().union(*(dataset_ids(item) for item in spec)) if spec else set()
    return set()


def wait_for_gpu_memory(job: Job, *, plane: ControlPlane, worker: str) -> str | None:
    """None when the job may start; else what became of it: `waiting` (given back, tried again in
    DCL_GPU_WAIT_SECONDS: other jobs hold the GPU's memory) or `failed` (the GPU is too small
    even when empty)."""
    settings = plane.settings
    try:
        verdict, detail = gpu_memory.check(job.spec.device, settings.gpu_job_min_free_mib)
    except Exception:  # a broken driver shows itself, with its own message, when the job runs
        log.warning("job %s: could not read the GPU's free memory", job.id, exc_info=True)
        return None
    if verdict == gpu_memory.FITS:
        return None
    try:
        if verdict == gpu_memory.NEVER:
            plane.lifecycle.fail(job.id, detail, worker=worker)
            return "failed"
        if plane.jobs.is_cancel_requested(job.id):
            plane.lifecycle.stopped(job.id, worker=worker)
            return "cancelled"
        plane.lifecycle.release(job.id, worker, countdown=settings.gpu_wait_seconds)
    except Refused as exc:
        log.warning("job %s: %s", job.id, exc)
        return "lost"
    log.info("job %s: waiting for GPU memory (%s); tried again in %g s", job.id, detail, settings.gpu_wait_seconds)
    return "waiting"


def _give_back(lifecycle, job_id: str, worker: str, hooks: JobHooks) -> str:
    """The worker is shutting down: the job (checkpointed) goes back to the queue now, so the next
    worker resumes it at once instead of waiting for the lease to run out."""
    try:
        # No message now: this worker, shutting down, would take it and never run it. Its last
        # reconciler pass (or the next worker's first) sends it once nothing here consumes.
        lifecycle.release(job_id, worker, send=False)
    except Refused:  # a cancel was requested meanwhile (release refuses it): it ends here
        lifecycle.stopped(job_id, worker=worker)
        return "cancelled"
    log.info("job %s: worker shutting down; given back at step %s to resume from its checkpoint", job_id, hooks.step)
    return "released"


def _end_failed(lifecycle, job_id: str, worker: str, hooks: JobHooks, message: str) -> str:
    if hooks.stop_reason == STOP_LEASE_LOST:
        return "lost"
    try:
        lifecycle.fail(job_id, message, worker=worker)
    except Refused:
        return "lost"
    return "failed"


@app.task(name=RUN_JOB, bind=True)
def run_job(self, job_id: str) -> str:
    """Celery entry point. Never raises: every outcome is recorded in the job store, so the
    message is acknowledged once the job has ended."""
    settings = get_settings()
    return execute_job(job_id, plane=get_plane(settings), worker=worker_name(self.request.hostname))
