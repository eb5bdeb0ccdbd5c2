"""`dcl serve`'s processes: uvicorn and, embedded, one worker that stops when the API stops.

uvicorn catches SIGTERM/SIGINT, shuts down, then raises the same signal again; with the
default SIGTERM handler that would end this process before it could stop its worker (a
second `dcl serve` would then find two workers on one data folder). Here the signal also
tells the worker to stop at once, and the re-raised signal ends `serve()` normally, so the
worker (and its pool and job children, one process group) is always stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import uvicorn

API_GRACE_S = 5
"""Seconds uvicorn gives open requests (and event streams) on shutdown."""
WORKER_GRACE_S = 8.0
"""Seconds the worker has from the signal to its warm shutdown before its group is killed: the
whole stop fits in Docker's 10 s stop timeout. A job cut off resumes from its last checkpoint."""


class EmbeddedWorker:
    """`python -m worker` in its own process group (so stopping it stops its pool too)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "worker"], start_new_session=True,
                                     preexec_fn=_stop_with_parent(os.getpid()) if sys.platform == "linux" else None)
        self.stop_requested_at: float | None = None
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        code = self.proc.wait()
        if code not in (0, -signal.SIGTERM, -signal.SIGKILL) and self.stop_requested_at is None:
            print(f"dcl: the embedded worker exited with {code}; jobs stay queued until a worker runs "
                  "(`dcl worker`)", file=sys.stderr, flush=True)

    def request_stop(self) -> None:
        """TERM to the worker (Celery's warm shutdown), once."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)

    def stop(self, grace_s: float = WORKER_GRACE_S) -> None:
        """Asks it to stop, waits what is left of `grace_s`, then KILLs the whole group."""
        self.request_stop()
        left = grace_s - (time.monotonic() - self.stop_requested_at)
        try:
            self.proc.wait(max(0.0, left))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of the group is left (a pool child)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def _stop_with_parent(parent: int):
    """For the worker's process, before it runs: a SIGTERM when `dcl serve` dies without
    stopping it (SIGKILL, the OOM killer), so no worker outlives its API."""

    def arm() -> None:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, worker: EmbeddedWorker | None):
        super().__init__(config)
        self.worker = worker

    def handle_exit(self, sig, frame) -> None:
        if self.worker is not None:
            self.worker.request_stop()
        super().handle_exit(sig, frame)


class Stopped(Exception):
    """uvicorn re-raised the signal it stopped on: a clean stop."""


def _stopped(signum, _frame) -> None:
    raise Stopped(signum)


def serve(host: str, port: int, log_level: str, embedded: bool, banner: str) -> None:
    config = uvicorn.Config("service.api.app:create_app", factory=True, host=host, port=port,
                            log_level=log_level, timeout_graceful_shutdown=API_GRACE_S)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)
    worker = EmbeddedWorker() if embedded else None
    try:
        print(banner + ("; embedded worker running" if worker else ""), file=sys.stderr, flush=True)
        Server(config, worker).run()
    except Stopped:
        pass
    finally:
        if worker is not None:
            for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the stop short
                signal.signal(sig, signal.SIG_IGN)
            worker.stop()
