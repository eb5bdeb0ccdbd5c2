"""`dcl serve --embedded`'s worker, supervised: started in its own process group, restarted when
it dies (any signal, any exit code) with the reason logged, backing off while it keeps dying;
the dead worker's running jobs are taken over at once (`on_death`), not when their leases run out.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

WORKER_GRACE_S = 6.0
"""Seconds the worker has from the signal to its warm shutdown before its group is killed (a job
gives its lease back at its next step; one still setting up is cut off and resumes from its last
checkpoint): with the take-over after it, the whole stop fits in Docker's 10 s stop timeout."""
FIRST_DELAY_S = 0.5
"""Wait before restarting a worker that ran a while; doubled at each quick death, up to MAX_DELAY_S."""
MAX_DELAY_S = 60.0
HEALTHY_AFTER_S = 60.0
"""A worker that ran this long before dying starts the back-off afresh."""


def how_it_ended(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def worker_command(node: str) -> list[str]:
    return [sys.executable, "-m", "worker", "--name", node]


class EmbeddedWorker:
    """One `python -m worker` at a time, restarted until `stop()`. `node` is its Celery node name
    (unique: this process's pid and a generation number); `on_death(node)` runs after each exit,
    also the last one, once the whole group is gone."""

    def __init__(self, on_death: Callable[[str], object] | None = None,
                 command: Callable[[str], list[str]] = worker_command, *,
                 first_delay_s: float = FIRST_DELAY_S, max_delay_s: float = MAX_DELAY_S,
                 healthy_after_s: float = HEALTHY_AFTER_S):
        self.on_death = on_death
        self.command = command
        self.first_delay_s, self.max_delay_s, self.healthy_after_s = first_delay_s, max_delay_s, healthy_after_s
        self.generation = 0
        self.restarts = 0
        self.delay_s = 0.0
        self.stop_requested_at: float | None = None
        self._lock = threading.Lock()  # a start and a stop request never interleave
        self._stopping = threading.Event()
        self._start()
        self._thread = threading.Thread(target=self._supervise, name="dcl-embedded-worker", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _start(self) -> None:
        self.generation += 1
        self.node = f"dcl-embedded-{os.getpid()}-{self.generation}@{socket.gethostname()}"
        self.proc = subprocess.Popen(self.command(self.node), start_new_session=True,
                                     preexec_fn=_stop_with_parent(os.getpid()) if sys.platform == "linux" else None)
        self.started_at = time.monotonic()

    def _supervise(self) -> None:
        while True:
            code = self.proc.wait()
            _kill_group(self.proc.pid)  # a pool or job process left behind
            if self.on_death is not None:
                try:
                    self.on_death(self.node)
                except Exception as exc:  # noqa: BLE001 - the leases then run out as usual
                    _say(f"could not take over the jobs of the dead worker {self.node}: {exc}")
            if self._stopping.is_set():
                return
            ran = time.monotonic() - self.started_at
            quick = ran < self.healthy_after_s and self.delay_s > 0
            self.delay_s = min(self.max_delay_s, self.delay_s * 2) if quick else self.first_delay_s
            _say(f"the embedded worker (pid {self.proc.pid}) {how_it_ended(code)} after {ran:.0f} s; its jobs are "
                 f"queued again; restarting it in {self.delay_s:g} s")
            if self._stopping.wait(self.delay_s):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.restarts += 1
                self._start()

    def request_stop(self) -> None:
        """TERM to the worker (Celery's warm shutdown: its jobs checkpoint and give their leases back), once."""
        with self._lock:
            if self.stop_requested_at is None:
                self.stop_requested_at = time.monotonic()
                self._stopping.set()
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGTERM)

    def stop(self, grace_s: float = WORKER_GRACE_S) -> None:
        """Asks it to stop, waits what is left of `grace_s`, then KILLs the whole group; returns once
        the jobs it left are taken over."""
        self.request_stop()
        left = grace_s - (time.monotonic() - self.stop_requested_at)
        try:
            self.proc.wait(max(0.0, left))
        except subprocess.TimeoutExpired:
            pass
        _kill_group(self.proc.pid)
        self.proc.wait(10)
        self._thread.join(10)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _say(message: str) -> None:
    print(f"dcl: {message}", file=sys.stderr, flush=True)


def _stop_with_parent(parent: int):
    """For the worker's process, before it runs: a SIGTERM when `dcl serve` dies without
    stopping it (SIGKILL, the OOM killer), so no worker outlives its API."""

    def arm() -> None:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def take_over_jobs(node: str) -> list[str]:
    """`on_death` for `dcl serve`: requeue the dead worker's running jobs through the job store."""
    from service.control.plane import ControlPlane
    from service.control.reconcile import take_over
    from service.control.settings import get_settings

    plane = ControlPlane(get_settings())
    try:
        return take_over(plane, node)
    finally:
        plane.close()
