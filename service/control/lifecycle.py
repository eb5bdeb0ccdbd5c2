"""Every change of a job's state, one method an event, with its side effects: the owner of the
job lifecycle. The API, the workers and the reconciler all call it; nothing else writes a job's
state (`transitions` holds the statements, private to this module).

A transition either happens, with its side effects done once (a message sent, files recorded
or deleted, a parent sweep settled), or raises `Refused` naming the event, the job and the
state it is in. Races (a duplicate delivery, a reconciler beside a worker) are settled by the
compare-and-set statements: one caller wins, the others are refused.

    event        from                                to           side effects
    submit       -                                   queued       message sent (a sweep: running, children queued)
    claim        queued | running, lease expired     running      attempt counted, worker seen
    heartbeat    running (held)                      running      lease extended
    progress     running (held)                      running      step and metric rows recorded
    release      running (held)                      queued       message sent again after a wait
    succeed      running (held)                      succeeded    files recorded, scores recorded, event recorded,
                                                                  parent settled
    fail         queued | running                    failed       files recorded, event recorded, parent settled
    cancel       queued | running                    cancelled | running (cancel requested)   event recorded (queued)
    stopped      running                             cancelled    checkpoint published, event recorded, parent settled
    requeue      running, lease expired              queued       message sent
    resend       queued                              queued       message sent
    retry        failed | cancelled                  queued       message sent, parent back to running
    delete       succeeded | failed | cancelled      -            files deleted, encoder score remade (refused while
                                                                  a model version points at it)
    label        any                                 (unchanged)  name, notes, tags set (not a state change)
    expire_lease running (held by a dead process)    running      lease ended now
    settle       a parent, no child active           succeeded | cancelled   table and plot written, event recorded

"Event recorded": the webhook deliveries its owner's hooks are owed (`webhooks.record_events`),
written in the transaction of the state change, so there is one per change and none without it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dcl_core.jobs import JOB_TYPES, Refusal
from dcl_core.jobs.base import MAX_TAGS
from dcl_core.experiments.sweep import member_name, results_csv, sweep_result
from service.control import transitions
from service.control.artifacts import ArtifactRepo
from service.control.clock import SYSTEM, Clock
from service.control.db import Database, json_safe, new_id
from service.control.dispatch import Dispatcher
from service.control.jobs import JobRepo
from service.control.models import ArtifactFile, Job
from service.control.queue import queue_for
from service.control.registry import versions_of
from service.control.storage import LocalStorage
from service.control.webhooks import record_events
from service.control.workers import WorkerRepo

log = logging.getLogger(__name__)

Plot = Callable[[dict, Path], None]


class Refused(Exception):
    """`event` is not allowed for the job in the state it is in (or the job is not there)."""

    def __init__(self, job_id: str, event: str, state: str, why: str = ""):
        self.job_id, self.event, self.state = job_id, event, state
        detail = f"job {job_id} not found" if state == "missing" else f"job {job_id} is {state}"
        super().__init__(f"cannot {event}: {detail}" + (f"; {why}" if why else ""))

    @property
    def missing(self) -> bool:
        return self.state == "missing"


class CapReached(Exception):
    """The owner's queued and running jobs would pass its cap."""


class _Registered(Exception):
    """A delete that would remove jobs model versions point at: (name, version, job id) each."""

    def __init__(self, versions: list[tuple[str, int, str]]):
        super().__init__(versions)
        self.versions = versions


def describe(job: Job | None) -> str:
    """A job's state in words, for refusals."""
    if job is None:
        return "missing"
    if job.status == "running" and job.cancel_requested:
        return "running (cancel requested)"
    return job.status


class Lifecycle:
    def __init__(self, db: Database, storage: LocalStorage, dispatcher: Dispatcher, settings, *,
                 clock: Clock = SYSTEM, plot: Plot | None = None):
        self.db = db
        self.storage = storage
        self.dispatcher = dispatcher
        self.settings = settings
        self.clock = clock
        self.plot = plot
        self.jobs = JobRepo(db, clock)
        self.artifacts = ArtifactRepo(db, clock)
        self.workers = WorkerRepo(db, clock)

    def _refuse(self, job_id: str, event: str, why: str = "", owner: str | None = None) -> Refused:
        return Refused(job_id, event, describe(self.jobs.get(job_id, owner)), why)

    # ---- creating ------------------------------------------------------------------------

    def submit(self, owner: str, spec: BaseModel, *, max_active: int | None = None) -> Job:
        """Record a job (a sweep: running, with its children queued) and send what runs on a
        worker. CapReached when `max_active` would be passed (checked in the same transaction)."""
        now = self.clock.now()
        kind = JOB_TYPES[spec.type]
        first = self._row(owner, spec, now)
        rows = [first]
        tags = list(getattr(spec, "tags", None) or [])
        if kind.has_children:
            # Members are named after their grid point ("dcl b32 seed1") and carry the sweep's tags.
            first.update(status="running", started_at=now, queue=None, enqueued_at=None)
            rows += [dict(self._row(owner, child, now + timedelta(microseconds=i + 1)), parent_id=first["id"],
                          enqueued_at=now, name=member_name(point))
                     for i, (child, point) in enumerate(zip(spec.child_specs(), spec.points()))]
        adds = len(rows) - 1 if kind.has_children else 1
        with self.db.engine.begin() as conn:
            if not transitions.insert_jobs(conn, rows, owner=owner, adds=adds, max_active=max_active):
                raise CapReached(owner)
            for row in rows if tags else ():
                transitions.set_tags(conn, row["id"], tags)
        for row in rows:
            if row["status"] == "queued" and row["queue"]:
                self.dispatcher.send(row["id"], row["queue"])
        return self.jobs.get(first["id"])  # type: ignore[return-value]

    def _row(self, owner: str, spec: BaseModel, now) -> dict[str, Any]:
        return dict(id=new_id("job"), owner=owner, type=spec.type, status="queued",
                    spec=spec.model_dump(mode="json"), queue=queue_for(spec, self.settings), created_at=now,
                    enqueued_at=now, attempts=0, cancel_requested=False, step=0,
                    name=getattr(spec, "name", None), notes=getattr(spec, "notes", None),
                    encoder_job=getattr(spec, "encoder_job", None))

    # ---- a worker's events -----------------------------------------------------------------

    def claim(self, job_id: str, worker: str, *, dead_holder: str | None = None) -> Job:
        """Take the job for `worker`. `dead_holder`: a holder the caller knows is dead (a killed
        sibling process), whose lease is taken over at once."""
        now = self.clock.now()
        with self.db.engine.begin() as conn:
            if not transitions.claim(conn, job_id, worker, now, self.settings.lease_seconds, dead_holder):
                raise self._refuse(job_id, "claim", "it is finished, cancelled or held by a live worker")
            self.workers.seen(worker, {"job": job_id}, conn=conn, now=now)
        return self.jobs.get(job_id)  # type: ignore[return-value]

    def heartbeat(self, job_id: str, worker: str) -> None:
        now = self.clock.now()
        with self.db.engine.begin() as conn:
            held = transitions.extend_lease(conn, job_id, worker, now, self.settings.lease_seconds)
            self.workers.seen(worker, {"job": job_id if held else None}, conn=conn, now=now)
        if not held:
            raise self._refuse(job_id, "heartbeat", f"{worker} no longer holds it")

    def progress(self, job_id: str, worker: str, step: int, *, total_steps: int | None = None,
                 epoch: float | None = None, rows: Iterable[dict] = ()) -> None:
        """Record progress and metric rows. `total_steps`/`epoch` left None keep their values."""
        rows = [json_safe(dict(r)) for r in rows]
        with self.db.engine.begin() as conn:
            if not transitions.record_progress(conn, self.db.upsert, job_id, worker, step, total_steps, epoch, rows):
                raise self._refuse(job_id, "record progress", f"{worker} no longer holds it")

    def release(self, job_id: str, worker: str, *, countdown: float | None = None, send: bool = True) -> None:
        """Give a claimed job back (no room on the GPU; the worker shuts down); it is sent again after
        `countdown` s, or, `send=False`, by the next reconciler pass that looks for it."""
        with self.db.engine.begin() as conn:
            if not transitions.release(conn, job_id, worker, self.clock.now()):
                raise self._refuse(job_id, "release", f"{worker} does not hold it")
        if not send:
            return
        job = self.jobs.get(job_id)
        if job is not None and job.queue:
            self.dispatcher.send(job_id, job.queue, countdown=countdown)

    def succeed(self, job_id: str, worker: str, result: dict, files: Iterable[ArtifactFile] = ()) -> None:
        now = self.clock.now()
        with self.db.engine.begin() as conn:
            if not transitions.succeed(conn, job_id, worker, result, now):
                raise self._refuse(job_id, "succeed", f"{worker} does not hold it")
            self.artifacts.put(job_id, files, conn=conn)
            record_events(conn, [job_id], now)
        self._after_end(job_id)

    def fail(self, job_id: str, message: str, *, worker: str | None = None, files: Iterable[ArtifactFile] = (),
             keep_checkpoint: bool = False) -> None:
        """-> failed with `message` a user can act on. `worker=None`: whoever holds it (the
        reconciler). `keep_checkpoint`: the run's last checkpoint is listed as `checkpoint.pt`."""
        files = list(files) + (self.storage.publish_checkpoint(job_id) if keep_checkpoint else [])
        now = self.clock.now()
        with self.db.engine.begin() as conn:
            if not transitions.fail(conn, job_id, worker, message, now):
                raise self._refuse(job_id, "fail", "it is not active" if worker is None else f"{worker} does not hold it")
            self.artifacts.put(job_id, files, conn=conn)
            record_events(conn, [job_id], now)
        self._after_end(job_id)

    def stopped(self, job_id: str, *, worker: str | None = None) -> None:
        """The job stopped after a cancel request: cancelled, its last checkpoint listed."""
        files = self.storage.publish_checkpoint(job_id)
        now = self.clock.now()
        with self.db.engine.begin() as conn:
            if not transitions.stopped(conn, job_id, worker, now):
                raise self._refuse(job_id, "mark stopped", "it is not active")
            self.artifacts.put(job_id, files, conn=conn)
            record_events(conn, [job_id], now)
        self._after_end(job_id)

    def expire_lease(self, job_id: str, worker: str) -> None:
        """End the lease of `worker`, known dead, so the job is claimed or requeued at once."""
        with self.db.engine.begin() as conn:
            if not transitions.expire_lease(conn, job_id, worker, self.clock.now()):
                raise self._refuse(job_id, "expire the lease", f"{worker} does not hold it")

    # ---- the reconciler's events -------------------------------------------------------------

    def requeue(self, job_id: str) -> None:
        """A running job whose lease expired (its worker is gone) goes back to the queue."""
        with self.db.engine.begin() as conn:
            if not transitions.requeue(conn, job_id, self.clock.now()):
                raise self._refuse(job_id, "requeue", "only a running job whose lease ran out is requeued")
        self._send(job_id)

    def resend(self, job_id: str) -> bool:
        """Send a queued job's message again (it may have been lost); True when the broker took it."""
        job = self.jobs.get(job_id)
        if job is None or job.status != "queued" or not job.queue:
            raise Refused(job_id, "resend", describe(job), "only a queued job is sent again")
        return self._send(job_id, job)

    def _send(self, job_id: str, job: Job | None = None) -> bool:
        job = job or self.jobs.get(job_id)
        if job is None or not job.queue or not self.dispatcher.send(job_id, job.queue):
            return False
        self.mark_sent(job_id)
        return True

    def mark_sent(self, job_id: str) -> None:
        """Its message went to the broker now (the reconciler waits DCL_REQUEUE_AFTER_SECONDS from here)."""
        with self.db.engine.begin() as conn:
            transitions.mark_enqueued(conn, job_id, self.clock.now())

    # ---- a user's events -----------------------------------------------------------------------

    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """A queued job is cancelled at once; a running one stops at its next step. A sweep's
        children are cancelled with it; it is settled once they have all stopped."""
        job = self.jobs.get(job_id, owner)
        if job is None or job.terminal:
            raise Refused(job_id, "cancel", describe(job), "it has already ended")
        now = self.clock.now()
        with self.db.engine.begin() as conn:
            record_events(conn, transitions.cancel(conn, job_id, now), now)
        if job.is_parent:
            self.settle_if_done(job_id)
        return self.jobs.get(job_id)  # type: ignore[return-value]

    def label(self, job_id: str, owner: str | None = None, *, add_tags: Iterable[str] = (),
              remove_tags: Iterable[str] = (), **changes: Any) -> Job:
        """Set what a person calls a job and notes about it, in any state: `name`, `notes` (None
        clears them), `tags` (replaces them), then `add_tags` and `remove_tags`. Not a state
        change; a Refusal naming `add_tags`/`tags` past the tag limit, writing nothing."""
        unknown = set(changes) - {"name", "notes", "tags"}
        if unknown:
            raise TypeError(f"label() got unexpected fields {sorted(unknown)}")
        with self.db.engine.begin() as conn:
            try:
                tags = transitions.label(conn, job_id, owner, changes, list(add_tags), list(remove_tags), MAX_TAGS)
            except ValueError as exc:
                raise Refusal("add_tags" if add_tags else "tags", str(exc)) from None
        if tags is None:
            raise Refused(job_id, "label", "missing")
        return self.jobs.get(job_id)  # type: ignore[return-value]

    def retryable(self, job: Job) -> list[str]:
        """What a retry of `job` queues again: the job, or a sweep's failed and cancelled members."""
        if job.is_parent:
            return [c.id for c in self.jobs.children(job.id) if c.status in ("failed", "cancelled")]
        return [job.id] if job.status in ("failed", "cancelled") else []

    def retry(self, job_id: str, owner: str | None = None) -> Job:
        """Queue a failed or cancelled job again (it resumes from its last checkpoint); for a sweep,
        its failed and cancelled members. A retried member puts its sweep back to running."""
        job = self.jobs.get(job_id, owner)
        ids = self.retryable(job) if job is not None else []
        if not ids:
            why = "it has no failed or cancelled member" if job is not None and job.is_parent \
                else "only a failed or cancelled job can be retried"
            raise Refused(job_id, "retry", describe(job), why)
        now = self.clock.now()
        with self.db.engine.begin() as conn:
            retried = [i for i in ids if transitions.retry(conn, i, now)[0]]
        for i in retried:
            self._send(i)
        return self.jobs.get(job_id)  # type: ignore[return-value]

    def delete(self, job_id: str, owner: str | None = None) -> list[str]:
        """Delete a finished job, its metrics, artifact records and files; a sweep with its members.
        Refused while a registered model's version points at it (or at a member). An object
        store that does not answer stops it before anything changes."""
        self.storage.check_reachable()
        try:
            with self.db.engine.begin() as conn:
                ids = transitions.delete_finished(conn, job_id, owner)
                registered = versions_of(conn, ids) if ids else []
                if registered:
                    raise _Registered(registered)  # rolls the delete back
        except _Registered as kept:
            name, version, held = kept.versions[0]
            member = "it" if held == job_id else f"its member {held}"
            raise self._refuse(job_id, "delete", f"{member} is version {version} of model {name}; delete that version "
                               f"first (DELETE /v1/models/{name}/versions/{version})", owner) from None
        if ids is None:
            raise self._refuse(job_id, "delete", "it (or one of its members) is queued or running; cancel it first",
                               owner)
        for i in ids:
            self.storage.delete_job(i)
        return ids

    # ---- parents -------------------------------------------------------------------------------

    def _after_end(self, job_id: str) -> None:
        """A child that ended settles its parent when it was the last one active. Failing here
        loses nothing: the reconciler settles it later."""
        try:
            job = self.jobs.get(job_id)
            if job is not None and job.parent_id:
                self.settle_if_done(job.parent_id)
        except Exception:
            log.warning("could not settle the parent of job %s", job_id, exc_info=True)

    def settle_if_done(self, parent_id: str) -> bool:
        try:
            self.settle(parent_id)
            return True
        except Refused:
            return False

    def settle(self, parent_id: str) -> None:
        """A parent whose children have all ended: its table (`dcl_core.experiments.sweep.sweep_result`) becomes
        its result, with `results.json`, `results.csv` and (with a `plot`) `accuracy.png`."""
        parent = self.jobs.get(parent_id)
        if parent is None or not parent.is_parent or parent.status != "running":
            raise Refused(parent_id, "settle", describe(parent), "only a running sweep is settled")
        children = self.jobs.children(parent_id)
        if any(child.active for child in children):
            raise Refused(parent_id, "settle", "running", "some of its members are still queued or running")
        members = [{"id": c.id, "status": c.status, "spec": c.spec_data, "result": c.result, "error": c.error}
                   for c in children]
        result = sweep_result(list(parent.spec_data.get("grid") or {}), members)
        files = [self.storage.write_file(parent_id, "results.json", _json_bytes(result)),
                 self.storage.write_file(parent_id, "results.csv", results_csv(result).encode())]
        if self.plot is not None:
            picture = self.storage.run_dir(parent_id) / "accuracy.png"
            picture.unlink(missing_ok=True)
            try:
                self.plot(result, picture)
                files.append(self.storage.keep_file(parent_id, picture.name))
            except Exception:  # the table is the result; a picture that fails must not lose it
                log.warning("sweep %s: could not draw %s", parent_id, picture.name, exc_info=True)
        status = "cancelled" if parent.cancel_requested else "succeeded"
        now = self.clock.now()
        with self.db.engine.begin() as conn:
            if not transitions.settle_parent(conn, parent_id, status, result, now):
                raise self._refuse(parent_id, "settle", "another process settled it, or a member was retried")
            self.artifacts.put(parent_id, files, conn=conn)
            record_events(conn, [parent_id], now)
        log.info("sweep %s %s: %d members", parent_id, status, len(children))


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n").encode()
