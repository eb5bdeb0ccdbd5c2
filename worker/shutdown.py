"""The worker is shutting down: its running jobs stop at their next step, checkpoint, and give
their lease back, so the next worker (this one restarted, or another) resumes them at once.

Celery's warm shutdown (SIGTERM to the worker) waits for running tasks; it does not tell them.
The flag is one byte of shared memory made before the pool forks, so every job's process sees
the main process set it from its signal handler (no lock: a signal handler must not wait).
"""

from __future__ import annotations

import ctypes
import multiprocessing

_flag = None


def arm() -> None:
    """In the worker's main process, before the pool forks: set the flag on a warm shutdown."""
    global _flag
    from celery.signals import worker_shutting_down

    _flag = multiprocessing.get_context("fork").RawValue(ctypes.c_bool, False)
    worker_shutting_down.connect(_on_shutdown, weak=False)


def _on_shutdown(**_kwargs) -> None:
    request()


def request() -> None:
    if _flag is not None:
        _flag.value = True


def requested() -> bool:
    """True in any process of a worker once it began to shut down."""
    return _flag is not None and bool(_flag.value)
