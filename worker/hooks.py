"""The engine's hooks as a worker implements them: progress and metrics go to the job's
lifecycle, the lease is kept alive by a heartbeat thread, and `should_stop` answers True when
the job was cancelled, its run time is up, another worker took it over or this worker is
shutting down.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from service.control.lifecycle import Refused
from worker import shutdown

log = logging.getLogger(__name__)

STOP_CANCELLED = "cancelled"
STOP_TIMEOUT = "timeout"
STOP_LEASE_LOST = "lease_lost"
STOP_SHUTDOWN = "shutdown"


class LeaseLost(Exception):
    """Raised from a hook once this worker no longer holds the job (its lease expired and
    the job was requeued or claimed by another worker). It unwinds the engine at once, so
    nothing more is written for a job that belongs to someone else: no metrics, and no
    checkpoint past the last step whose metrics were recorded (a resume from that
    checkpoint then leaves no gap in the series)."""


class Heartbeat:
    """Extends the job's lease every `interval_s` in a daemon thread.

    When the store answers that this worker no longer holds the job (the lease expired
    and another worker claimed it, or the job was finished elsewhere), `lost` is set and
    the training loop stops at its next `should_stop` poll. A store that cannot be
    reached is retried; once the lease has run out without a successful heartbeat the
    job counts as lost too (someone else may own it by now).
    """

    def __init__(self, lifecycle, job_id: str, worker: str, *, lease_s: float, interval_s: float):
        self.lifecycle = lifecycle
        self.job_id = job_id
        self.worker = worker
        self.lease_s = lease_s
        self.interval_s = max(0.05, min(interval_s, lease_s / 2))
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)
        self._last_ok = time.monotonic()

    def __enter__(self) -> Heartbeat:
        self._last_ok = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.lifecycle.heartbeat(self.job_id, self.worker)
                held = True
            except Refused:
                held = False
            except Exception:  # the database is down for a moment: try again
                log.warning("heartbeat for %s failed", self.job_id, exc_info=True)
                if time.monotonic() - self._last_ok > self.lease_s:
                    log.error("lease of %s ran out without a heartbeat: stopping", self.job_id)
                    self.lost.set()
                    return
                continue
            if not held:
                log.error("job %s is no longer held by %s: stopping", self.job_id, self.worker)
                self.lost.set()
                return
            self._last_ok = time.monotonic()


def _json_number(value: Any) -> Any:
    """Metrics as JSON the job store (and PostgreSQL's JSON type) accepts: no NaN/inf."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return None
    if isinstance(value, int):
        return value
    return number


class JobHooks:
    """Reports to the job's lifecycle and decides when the engine must stop.

    - `on_start` records the run's size; every `on_step` is one `lifecycle.progress` (the
      engine already batches: it calls it every `log_every_steps` and at epoch ends).
    - `should_stop` is cheap enough for every step: it reads the cancel flag at most once
      every `cancel_poll_s`.
    - `deadline` (a `time.monotonic()` value, or None) is the run time limit.
    """

    def __init__(
        self,
        lifecycle,
        job_id: str,
        worker: str,
        *,
        heartbeat: Heartbeat | None = None,
        deadline: float | None = None,
        cancel_poll_s: float = 1.0,
    ):
        self.lifecycle = lifecycle
        self.job_id = job_id
        self.worker = worker
        self.heartbeat = heartbeat
        self.deadline = deadline
        self.cancel_poll_s = cancel_poll_s
        self.total_steps: int | None = None
        self.step = 0
        self.epoch: float | None = None
        self.last_metrics: dict[str, Any] = {}
        self.checkpoints: list[tuple[str, str]] = []
        self.uploader = None  # a CheckpointUploader when the job's files go to an object store
        self.stop_reason: str | None = None
        self._next_cancel_poll = 0.0

    # -- Hooks protocol (dcl_core.hooks.Hooks) -------------------------------------
    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        self.total_steps = int(total_steps) if total_steps is not None else None
        start_step = int(info.get("start_step", info.get("step", 0)) or 0) if info else 0
        self.step = start_step
        self._report(step=start_step, rows=[])

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        values = {key: _json_number(value) for key, value in metrics.items()}
        self.step = int(step)
        if values.get("epoch") is not None:
            self.epoch = values["epoch"]
        self.last_metrics = values
        self._report(step=self.step, rows=[{**values, "step": self.step}])

    def _report(self, step: int, rows: list[dict]) -> None:
        try:
            self.lifecycle.progress(self.job_id, self.worker, step, total_steps=self.total_steps,
                                    epoch=self.epoch, rows=rows)
        except Refused:
            self._lost()

    def _lost(self) -> None:
        self.stop_reason = STOP_LEASE_LOST
        raise LeaseLost(f"job {self.job_id} is no longer held by {self.worker}")

    def should_stop(self) -> bool:
        if self.stop_reason == STOP_LEASE_LOST or (self.heartbeat is not None and self.heartbeat.lost.is_set()):
            self._lost()
        if self.stop_reason is not None:
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop_reason = STOP_TIMEOUT
        elif shutdown.requested():
            self.stop_reason = STOP_SHUTDOWN
        else:
            now = time.monotonic()
            if now >= self._next_cancel_poll:
                self._next_cancel_poll = now + self.cancel_poll_s
                try:
                    if self.lifecycle.jobs.is_cancel_requested(self.job_id):
                        self.stop_reason = STOP_CANCELLED
                except Exception:
                    log.warning("could not read the cancel flag of %s", self.job_id, exc_info=True)
        return self.stop_reason is not None

    def on_checkpoint(self, path: Path, sha256: str) -> None:
        self.checkpoints.append((str(path), sha256))
        if self.uploader is not None:
            self.uploader.submit(path, sha256)
        log.info("job %s: checkpoint %s (sha256 %s)", self.job_id, path, sha256[:12])
