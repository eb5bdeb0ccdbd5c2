"""The reconciler: the job store is the truth, the broker only a delivery mechanism.

`reconcile(store, settings)` repairs what a broker or a worker can lose:

- a job `queued` in the store whose message was sent more than
  `settings.requeue_after_seconds` ago and that has no message waiting in the broker
  (Redis restarted without persistence, a message was dropped) is sent again;
- a `running` job whose lease expired (its worker was killed, its machine lost power) is
  put back to `queued` and sent again; its next worker resumes from the checkpoint;
- a parent (a sweep) whose children have all ended is settled (its table and plot);
- a `running` job whose lease expired after a cancel was requested is marked cancelled;
  one that has already been tried `MAX_ATTEMPTS` times (it keeps killing its worker, e.g.
  out of memory) is failed rather than retried forever.

Sending a job twice is harmless: the task's claim is a compare-and-set, so only one
delivery runs it. Looking into the broker first (for the Redis and SQLAlchemy transports)
just avoids piling up duplicates behind a long job; with another transport the job is
sent again at most once every `requeue_after_seconds`.

`python -m worker` runs `Reconciler` (a daemon thread in the worker's main process, which
never imports torch) every `interval_s`. Every worker may run one; they do not need to
coordinate.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from service.queue import RUN_JOB, enqueue, queue_for
from worker.checkpoint_artifact import publish_checkpoint
from worker.leases import release_dead_children

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""Claims after which a job whose worker keeps dying is failed instead of retried."""


def _job_id_of(payload: Any) -> str | None:
    """The job id in a Celery (protocol 2) message as the virtual transports store it."""
    if isinstance(payload, (bytes, str)):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    if not isinstance(payload, dict):
        return None
    headers = payload.get("headers") or {}
    if headers.get("task") not in (None, RUN_JOB):
        return None
    body = payload.get("body")
    try:
        if (payload.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body) if isinstance(body, (bytes, str)) else body
        args = decoded[0] if isinstance(decoded, list) else decoded.get("args")
        return str(args[0]) if args else None
    except Exception:
        return None


def pending_job_ids(app, queues: Iterable[str]) -> set[str] | None:
    """Job ids with a message waiting (not yet delivered) in `queues`, or None when the
    broker's transport cannot be looked into (or is unreachable)."""
    found: set[str] = set()
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
            driver = conn.transport.driver_name
            channel = conn.default_channel
            if driver == "redis":
                for queue in queues:
                    for priority in channel.priority_steps:
                        for raw in channel.client.lrange(channel._q_for_pri(queue, priority), 0, -1):
                            found.add(_job_id_of(raw))
            elif driver == "sqlalchemy":
                message_cls = channel.message_cls
                try:
                    for queue in queues:
                        for message in channel._query_all(queue).filter(message_cls.visible.is_(True)):
                            found.add(_job_id_of(message.payload))
                finally:
                    channel.session.commit()
            else:
                return None
    except Exception:
        log.warning("could not look into the broker's queues", exc_info=True)
        return None
    found.discard(None)  # type: ignore[arg-type]
    return found


def reconcile(store, settings, app=None, *, max_attempts: int = MAX_ATTEMPTS) -> list[tuple[str, str]]:
    """One pass. Returns what it did: (job_id, action) with action one of `requeued`
    (a running job whose worker died), `resent` (a queued job whose message was lost),
    `cancelled`, `failed`, `settled` (a sweep whose children all ended)."""
    if app is None:
        from service.queue import default_app

        app = default_app()
    actions: list[tuple[str, str]] = settle_parents(store, settings)
    stale = store.stale_jobs(queued_older_than_s=settings.requeue_after_seconds)
    if not stale:
        return actions
    queues = sorted({job.get("queue") or queue_for(job.get("spec") or {}, settings) for job in stale})
    pending = pending_job_ids(app, queues)
    for job in stale:
        job_id = job["id"]
        queue = job.get("queue") or queue_for(job.get("spec") or {}, settings)
        if job["status"] == "running":
            if job.get("cancel_requested"):
                # Listed like a cancel the worker saw itself: the checkpoint is what the job leaves.
                run_dir = Path(settings.artifacts_dir) / job_id
                if store.mark_cancelled(job_id, None, publish_checkpoint(run_dir)):
                    actions.append((job_id, "cancelled"))
                continue
            if int(job.get("attempts") or 0) >= max_attempts:
                message = (f"the worker running this job stopped without a word {job['attempts']} times "
                           "(killed, out of memory, machine lost?); giving up. See the worker logs.")
                if store.fail(job_id, None, message):
                    actions.append((job_id, "failed"))
                continue
            if not store.requeue(job_id):  # its worker came back to life, or someone else requeued it
                continue
            action = "requeued"
        else:
            if pending is not None and job_id in pending:
                continue  # its message is waiting behind other jobs: nothing is lost
            action = "resent"
        try:
            enqueue(job_id, queue, app=app)
        except Exception:
            log.warning("could not send job %s to queue %s; will try again", job_id, queue, exc_info=True)
            continue
        store.mark_enqueued(job_id)
        log.warning("reconciler: job %s %s to queue %s", job_id, action, queue)
        actions.append((job_id, action))
    return actions


def settle_parents(store, settings) -> list[tuple[str, str]]:
    """Settle the parents (sweeps) whose children all ended without a worker settling them
    (cancelled while queued, failed here, a worker that died between a child and its parent)."""
    from pathlib import Path

    from dcl_core.experiments.sweep_plot import plot_accuracy
    from service.sweeps import settle

    actions = []
    for parent_id in store.unsettled_parents():
        try:
            if settle(store, Path(settings.artifacts_dir), parent_id, plot=plot_accuracy):
                actions.append((parent_id, "settled"))
        except Exception:
            log.warning("could not settle %s; will try again", parent_id, exc_info=True)
    return actions


def default_interval_s(settings) -> float:
    """Often enough to notice a dead worker soon after its lease runs out."""
    return max(1.0, min(30.0, settings.lease_seconds / 2, settings.requeue_after_seconds / 2))


class Reconciler:
    """Runs `reconcile` every `interval_s` in a daemon thread until `stop()`.

    Each pass also records the worker as seen in the job store (`worker_info`, for
    /readyz); with `reconcile_jobs=False` that is all it does.
    """

    def __init__(self, settings, app, *, interval_s: float | None = None, store=None,
                 worker_info: dict | None = None, reconcile_jobs: bool = True):
        self.settings = settings
        self.app = app
        self.interval_s = interval_s if interval_s is not None else default_interval_s(settings)
        self.worker_info = worker_info
        self.reconcile_jobs = reconcile_jobs
        self._store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dcl-reconciler", daemon=True)
        # Held for a whole pass. `python -m worker` makes every fork of the main process
        # wait for it (worker/forking.py): a fork in the middle of a pass would copy a
        # half-done SQLite transaction into the job's child. Between passes the store
        # holds no open connection at all.
        self.pass_lock = threading.RLock()

    @property
    def store(self):
        if self._store is None:
            from service.store import JobStore

            self._store = JobStore(self.settings.database_url)
        return self._store

    def start(self) -> Reconciler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> list[tuple[str, str]]:
        with self.pass_lock:
            try:
                if self.worker_info:
                    node = self.worker_info.get("node", "worker")
                    self.store.worker_seen(node, self.worker_info)
                    for job_id in release_dead_children(self.store, node):
                        log.warning("reconciler: job %s: its process on this worker died; lease ended", job_id)
                if self.reconcile_jobs:
                    return reconcile(self.store, self.settings, self.app)
                return []
            finally:
                self.store.dispose()  # no pooled connection outlives the pass

    def _run(self) -> None:
        if self.reconcile_jobs:
            log.info("reconciler: every %.1f s (requeue after %.0f s, lease %.0f s)", self.interval_s,
                     self.settings.requeue_after_seconds, self.settings.lease_seconds)
        while True:
            try:
                self.run_once()
            except Exception:
                log.warning("reconciler pass failed; trying again in %.1f s", self.interval_s, exc_info=True)
            if self._stop.wait(self.interval_s):
                return
