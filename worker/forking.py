"""Fork safety for the worker's main process.

The prefork pool forks a fresh child for every job, and with the embedded SQLite broker
(a transport without an event loop) it forks from one of its helper threads while the
main thread consumes and logs and the reconciler thread reconciles. `fork()` copies the
memory of every thread but runs only the forking one: a lock another thread held at that
instant stays held forever in the child. Two such locks bite here:

- the buffered stream under a logging handler (CPython does not reset it after a fork):
  the child hangs at its first log line, before it even claims its job;
- SQLite's per-process lock bookkeeping during a reconciler pass: the child's own
  writes then fail with "database is locked";
- SQLite's process-wide mutexes while the main thread polls the embedded broker: the
  child hangs in its first `sqlite3.connect`, a job received and never claimed.

`install_fork_guards` makes a fork wait until no thread is inside a logging handler, a
reconciler pass or a broker query (they are short), and releases them on both sides afterwards.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterable

_installed = False

BROKER_LOCK = threading.RLock()
"""Held by every query of the SQLite-backed broker (kombu's sqlalchemy transport)."""

_BROKER_QUERIES = ("_get_or_create", "_put", "_get", "_query_all", "_purge", "_size")


def guard_sqlalchemy_broker() -> threading.RLock:
    """Make each of kombu's sqlalchemy-transport queries hold BROKER_LOCK; returns the lock,
    for `install_fork_guards`. Idempotent."""
    from kombu.transport import sqlalchemy as transport

    for name in _BROKER_QUERIES:
        query = getattr(transport.Channel, name)
        if getattr(query, "_holds_broker_lock", False):
            continue

        @functools.wraps(query)
        def guarded(self, *args, _query=query, **kwargs):
            with BROKER_LOCK:
                return _query(self, *args, **kwargs)

        guarded._holds_broker_lock = True
        setattr(transport.Channel, name, guarded)
    return BROKER_LOCK


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
