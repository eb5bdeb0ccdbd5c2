"""Fork safety for the worker's main process.

The prefork pool forks a fresh child for every job, and with the embedded SQLite broker
(a transport without an event loop) it forks from one of its helper threads while the
main thread consumes and logs and the reconciler thread reconciles. `fork()` copies the
memory of every thread but runs only the forking one: a lock another thread held at that
instant stays held forever in the child. Two such locks bite here:

- the buffered stream under a logging handler (CPython does not reset it after a fork):
  the child hangs at its first log line, before it even claims its job;
- SQLite's per-process lock bookkeeping during a reconciler pass: the child's own
  writes then fail with "database is locked".

`install_fork_guards` makes a fork wait until no thread is inside a logging handler or
a reconciler pass (they are short), and releases them on both sides afterwards.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

_installed = False


def _all_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [
        logger for logger in list(logging.Logger.manager.loggerDict.values()) if isinstance(logger, logging.Logger)
    ]
    handlers: list[logging.Handler] = []
    for logger in loggers:
        for handler in list(logger.handlers):
            if handler not in handlers:
                handlers.append(handler)
    return handlers


def install_fork_guards(locks: Iterable[threading.RLock] = ()) -> None:
    """Hold `locks` (taken first, in order), then every logging handler's lock, across
    each fork of this process. Call once, before the pool starts."""
    global _installed
    if _installed:
        return
    _installed = True
    locks = list(locks)
    held: list[logging.Handler] = []

    def before() -> None:
        for lock in locks:
            lock.acquire()
        held[:] = _all_handlers()
        for handler in held:
            handler.acquire()

    def after_in_parent() -> None:
        for handler in reversed(held):
            handler.release()
        held.clear()
        for lock in reversed(locks):
            lock.release()

    def after_in_child() -> None:
        # logging's own after-fork hook (registered first, so run first) has already
        # given every handler a fresh lock; releasing is only needed if it has not.
        for handler in reversed(held):
            try:
                handler.release()
            except RuntimeError:
                pass
        held.clear()
        for lock in reversed(locks):
            lock.release()

    os.register_at_fork(before=before, after_in_parent=after_in_parent, after_in_child=after_in_child)
