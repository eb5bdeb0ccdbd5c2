"""The reconciler thread of a worker's main process (which never imports torch): every
`interval_s` it records the worker as seen (for /readyz), ends the leases of this worker's dead
job processes, and runs one reconciler pass (`service.control.reconcile`; the first one also
resends the queued jobs whose message is not waiting in the broker, and so does `last_pass`). Every worker may run
one; they need not coordinate.
"""

from __future__ import annotations

import logging
import threading

from service.control.reconcile import reconcile
from worker.leases import release_dead_children

log = logging.getLogger(__name__)


def default_interval_s(settings) -> float:
    """Often enough to notice a dead worker soon after its lease runs out."""
    return max(1.0, min(30.0, settings.lease_seconds / 2, settings.requeue_after_seconds / 2))


class Reconciler:
    """Runs the pass every `interval_s` in a daemon thread until `stop()`; with
    `reconcile_jobs=False` it only records the worker as seen."""

    def __init__(self, settings, app, *, interval_s: float | None = None, plane=None,
                 worker_info: dict | None = None, reconcile_jobs: bool = True):
        self.settings = settings
        self.app = app
        self.interval_s = interval_s if interval_s is not None else default_interval_s(settings)
        self.worker_info = worker_info
        self.reconcile_jobs = reconcile_jobs
        self._plane = plane
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dcl-reconciler", daemon=True)
        # Held for a whole pass. `python -m worker` makes every fork of the main process wait for
        # it (worker/forking.py): a fork in the middle of a pass would copy a half-done SQLite
        # transaction into the job's child. Between passes no connection is held at all.
        self.pass_lock = threading.RLock()
        self._first_pass = True

    @property
    def plane(self):
        if self._plane is None:
            from dcl_core.experiments.sweep_plot import plot_accuracy
            from service.control.plane import ControlPlane

            self._plane = ControlPlane(self.settings, celery=self.app, plot=plot_accuracy)
        return self._plane

    def start(self) -> Reconciler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def last_pass(self) -> None:
        """After the worker stopped consuming: send the jobs it gave back to the other workers."""
        if self.reconcile_jobs:
            try:
                self.run_once(last=True)
            except Exception:
                log.warning("reconciler: the last pass failed; the next worker's first pass does it", exc_info=True)

    def run_once(self, last: bool = False) -> list[tuple[str, str]]:
        """One pass; the first one, and `last` (once this worker stopped consuming), also resend
        every queued job with no message waiting."""
        with self.pass_lock:
            try:
                if self.worker_info and not last:  # the last pass: this worker is no longer to be seen
                    node = self.worker_info.get("node", "worker")
                    self.plane.workers.seen(node, self.worker_info)
                    for job_id in release_dead_children(self.plane, node):
                        log.warning("reconciler: job %s: its process on this worker died; lease ended", job_id)
                if self.reconcile_jobs:
                    # The first pass, before this worker consumes, also resends every queued job
                    # with no message waiting: one given back by a worker that stopped may have had
                    # its message taken by that worker as it shut down, and lost with it.
                    first, self._first_pass = self._first_pass, False
                    return reconcile(self.plane, queued_older_than_s=0 if first or last else None)
                return []
            finally:
                self.plane.db.dispose()  # no pooled connection outlives the pass

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
