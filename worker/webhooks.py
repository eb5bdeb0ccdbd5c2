"""The webhook dispatcher thread of a worker's main process, beside the reconciler: every
DCL_WEBHOOK_POLL_SECONDS it sends what the outbox holds due (`service.control.delivery`).
Every worker may run one; each delivery is claimed by one of them. A receiver that is slow or
down delays only its own deliveries, never a job.
"""

from __future__ import annotations

import logging
import threading
import time

from service.control.db import Database
from service.control.delivery import Deliverer

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0


class WebhookDispatcher:
    def __init__(self, settings, *, interval_s: float | None = None):
        self.settings = settings
        self.interval_s = interval_s if interval_s is not None else settings.webhook_poll_seconds
        self._deliverer: Deliverer | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dcl-webhooks", daemon=True)
        self._pruned_at = 0.0
        # Held by each database call (not while a receiver is waited on) and taken by every fork of
        # the main process (worker/forking.py): a fork must not copy a half-done transaction.
        self.pass_lock = threading.RLock()

    @property
    def deliverer(self) -> Deliverer:
        if self._deliverer is None:
            with self.pass_lock:  # opening the store reads it
                db = Database(self.settings.database_url)
                db.dispose()
            self._deliverer = Deliverer(db, self.settings, lock=self.pass_lock, hold_no_connection=True)
        return self._deliverer

    def start(self) -> WebhookDispatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Not waiting for a receiver: a delivery cut off now is tried again (it stays claimed a while)."""
        self._stop.set()
        self._thread.join(timeout=2)
        if self._deliverer is not None:
            self._deliverer.close(wait=False)

    def run_once(self) -> list[tuple[str, str]]:
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            self.deliverer.prune()
        return self.deliverer.run_once()

    def _run(self) -> None:
        log.info("webhooks: dispatching every %.1f s", self.interval_s)
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.warning("webhook dispatch failed; trying again in %.1f s", self.interval_s, exc_info=True)
            if self._stop.wait(self.interval_s):
                return
