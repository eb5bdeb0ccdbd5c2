"""Sends again, as soon as the broker is back, the jobs a submit could not enqueue.

A job accepted while the broker is down is in the job store (`queued`) but has no message.
The reconciler would send it after `DCL_REQUEUE_AFTER_SECONDS` (5 minutes by default); the
API knows at once that the send failed, so it keeps the job here and tries again every
`interval_s` until the broker takes it. A job cancelled meanwhile is dropped. Nothing is
lost if the API stops first: the reconciler still sends the job later.
"""

from __future__ import annotations

import logging
import threading

from service.queue import enqueue

log = logging.getLogger(__name__)


class Resender:
    def __init__(self, store, celery, *, interval_s: float = 1.0):
        self.store = store
        self.celery = celery
        self.interval_s = interval_s
        self._waiting: dict[str, str] = {}  # job id -> queue, in submit order
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, job_id: str, queue: str) -> None:
        """Send `job_id` to `queue` once the broker answers (a thread starts on first use)."""
        with self._lock:
            self._waiting[job_id] = queue
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dcl-resender", daemon=True)
                self._thread.start()

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._waiting)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def send_waiting(self) -> int:
        """One pass: send the waiting jobs in order, stopping at the first failure (the broker
        is still down). Returns how many were sent."""
        sent = 0
        for job_id, queue in list(self._waiting.items()):
            job = self.store.get_job(job_id)
            if job is not None and job["status"] == "queued":
                try:
                    enqueue(job_id, queue, self.celery)
                except Exception as exc:
                    log.debug("broker still unreachable (%s: %s)", type(exc).__name__, exc)
                    return sent
                self.store.mark_enqueued(job_id)
                sent += 1
                log.warning("job %s sent to queue %s now that the broker is back", job_id, queue)
            with self._lock:
                self._waiting.pop(job_id, None)
        return sent

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.send_waiting()
            except Exception:  # the job store itself is unreachable: try again later
                log.warning("could not resend waiting jobs", exc_info=True)
