"""`dcl serve`'s processes: uvicorn and, embedded, one supervised worker (service/supervisor.py)
that stops when the API stops.

uvicorn catches SIGTERM/SIGINT, shuts down, then raises the same signal again; with the
default SIGTERM handler that would end this process before it could stop its worker (a
second `dcl serve` would then find two workers on one data folder). Here the signal also
tells the worker to stop at once, and the re-raised signal ends `serve()` normally, so the
worker (and its pool and job children, one process group) is always stopped.
"""

from __future__ import annotations

import signal
import sys

import uvicorn

from service.datalock import lock_data_dir
from service.supervisor import EmbeddedWorker, take_over_jobs

API_GRACE_S = 5
"""Seconds uvicorn gives open requests (and event streams) on shutdown."""


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


def app_factory(worker: EmbeddedWorker | None):
    """The app, knowing its embedded worker (/readyz says `no worker` while it is down)."""

    def create():
        from service.api.app import create_app

        app = create_app()
        app.state.embedded_worker = worker
        return app

    return create


def serve(host: str, port: int, log_level: str, embedded: bool, banner: str, data_dir=None) -> None:
    """`data_dir`: locked for this server's life when it runs an embedded worker."""
    lock = lock_data_dir(data_dir) if embedded and data_dir is not None else None  # noqa: F841 - held till exit
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)
    worker = EmbeddedWorker(on_death=take_over_jobs) if embedded else None
    config = uvicorn.Config(app_factory(worker), factory=True, host=host, port=port,
                            log_level=log_level, timeout_graceful_shutdown=API_GRACE_S)
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
