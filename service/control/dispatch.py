"""Sending a job's message to the broker, and sending again what could not be sent.

A job whose message cannot be sent (the broker is down) stays `queued` in the job store. With
`retry_in_background` (the API: it knows at once that the send failed) a thread tries again
every `interval_s` until the broker takes it, in submit order; a job no longer queued by then
is dropped. Without it (a worker), or if the process stops first, the reconciler sends it
after DCL_REQUEUE_AFTER_SECONDS. Sending twice is harmless: a claim is a compare-and-set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.control.queue import enqueue

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, celery, *, still_queued: Callable[[str], bool], on_sent: Callable[[str], None],
                 retry_in_background: bool = False, interval_s: float = 1.0):
        self.celery = celery
        self.still_queued = still_queued
        self.on_sent = on_sent
        self.retry_in_background = retry_in_background
        self.interval_s = interval_s
        self._waiting: dict[str, str] = {}  # job id -> queue, in submit order
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, job_id: str, queue: str, countdown: float | None = None) -> bool:
        """Send now; False when the broker did not take it (then it waits for the resend)."""
        try:
            enqueue(job_id, queue, self.celery, countdown=countdown)
            return True
        except Exception as exc:
            log.warning("could not send job %s to queue %s (%s: %s); it stays queued and is sent again "
                        "once the broker is back", job_id, queue, type(exc).__name__, exc)
            if self.retry_in_background:
                self._wait(job_id, queue)
            return False

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._waiting)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def send_waiting(self) -> int:
        """One pass: send the waiting jobs in order, stopping at the first failure (the broker is
        still down). Returns how many were sent."""
        sent = 0
        for job_id, queue in list(self._waiting.items()):
            if self.still_queued(job_id):
                try:
                    enqueue(job_id, queue, self.celery)
                except Exception as exc:
                    log.debug("broker still unreachable (%s: %s)", type(exc).__name__, exc)
                    return sent
                self.on_sent(job_id)
                sent += 1
                log.warning("job %s sent to queue %s now that the broker is back", job_id, queue)
            with self._lock:
                self._waiting.pop(job_id, None)
        return sent

    def _wait(self, job_id: str, queue: str) -> None:
        with self._lock:
            self._waiting[job_id] = queue
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dcl-resender", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.send_waiting()
            except Exception:  # the job store itself is unreachable: try again later
                log.warning("could not resend waiting jobs", exc_info=True)
