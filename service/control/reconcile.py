"""One reconciler pass: the job store is the truth, the broker only a delivery mechanism.

It repairs what a broker or a worker can lose:
- a job `queued` whose message was sent more than DCL_REQUEUE_AFTER_SECONDS ago and that has
  no message waiting in the broker (Redis restarted without persistence, a message dropped)
  is sent again;
- a `running` job whose lease expired (its worker was killed, its machine lost power) is put
  back to `queued` and sent again; its next worker resumes from the checkpoint;
- such a job that a cancel was requested for is marked cancelled; one already tried
  `MAX_ATTEMPTS` times (it keeps killing its worker, e.g. out of memory) is failed;
- a parent (a sweep) whose children have all ended is settled.

Sending a job twice is harmless (a claim is a compare-and-set); looking into the broker first
(Redis and SQLAlchemy transports) avoids piling up duplicates behind a long job.
"""

from __future__ import annotations

import logging

from service.control.lifecycle import Refused
from service.control.plane import ControlPlane
from service.control.queue import pending_job_ids

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""Claims after which a job whose worker keeps dying is failed instead of retried."""


def reconcile(plane: ControlPlane, *, max_attempts: int = MAX_ATTEMPTS,
              queued_older_than_s: float | None = None) -> list[tuple[str, str]]:
    """One pass. Returns what it did: (job_id, action), action one of `requeued` (a running job
    whose worker died), `resent` (a queued job whose message was lost), `cancelled`, `failed`,
    `settled` (a sweep whose children all ended). `queued_older_than_s`: how old a queued job's
    message must be to be looked for (default DCL_REQUEUE_AFTER_SECONDS)."""
    lifecycle = plane.lifecycle
    actions = settle_parents(plane)
    if queued_older_than_s is None:
        queued_older_than_s = plane.settings.requeue_after_seconds
    stale = plane.jobs.stale(queued_older_than_s=queued_older_than_s)
    if not stale:
        return actions
    pending = pending_job_ids(plane.celery, sorted({job.queue for job in stale if job.queue}))
    for job in stale:
        try:
            if job.status == "running" and job.cancel_requested:
                lifecycle.stopped(job.id)
                actions.append((job.id, "cancelled"))
            elif job.status == "running" and job.attempts >= max_attempts:
                lifecycle.fail(job.id, f"the worker running this job stopped without a word {job.attempts} times "
                                       "(killed, out of memory, machine lost?); giving up. See the worker logs.")
                actions.append((job.id, "failed"))
            elif job.status == "running":
                lifecycle.requeue(job.id)
                actions.append((job.id, "requeued"))
                log.warning("reconciler: job %s requeued to %s (its worker stopped)", job.id, job.queue)
            elif pending is None or job.id not in pending:
                if lifecycle.resend(job.id):
                    actions.append((job.id, "resent"))
                    log.warning("reconciler: job %s sent again to %s", job.id, job.queue)
        except Refused:  # its worker came back to life, or another process got there first
            continue
    return actions


def settle_parents(plane: ControlPlane) -> list[tuple[str, str]]:
    """Settle the parents (sweeps) whose children all ended without a worker settling them
    (cancelled while queued, failed here, a worker that died between a child and its parent)."""
    actions = []
    for parent_id in plane.jobs.unsettled_parents():
        try:
            if plane.lifecycle.settle_if_done(parent_id):
                actions.append((parent_id, "settled"))
        except Exception:
            log.warning("could not settle %s; will try again", parent_id, exc_info=True)
    return actions


def take_over(plane: ControlPlane, node: str) -> list[str]:
    """The worker `node` is known dead (its supervisor saw it exit): its running jobs go back to
    the queue now, not when their leases run out, and it no longer counts as seen. Returns the
    job ids requeued."""
    requeued = []
    for job in plane.jobs.running_held_by(f"{node}/"):
        try:
            plane.lifecycle.expire_lease(job.id, job.worker)
            plane.lifecycle.requeue(job.id)
        except Refused:  # it ended, or someone else took it, in the meantime
            continue
        requeued.append(job.id)
        log.warning("job %s: its worker %s died; queued again", job.id, node)
    plane.workers.forget(node)
    return requeued
