"""Forks of the worker's main process wait for threads to leave logging handlers and
reconciler passes (worker/forking.py): the child never inherits a lock held forever."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.fixtures.servers import REPO_ROOT

SCRIPT = textwrap.dedent('''
    import logging, os, sys, threading, time
    from worker.forking import install_fork_guards

    finished = {}

    class SlowStream:
        """A stream whose write takes a while: a thread is inside the handler when we fork."""
        def write(self, text):
            time.sleep(0.6)
            sys.__stderr__.write(text)
            finished.setdefault("busy_logger", True)  # still inside the handler
        def flush(self):
            pass

    logging.basicConfig(stream=SlowStream(), level=logging.INFO, format="%(message)s")
    reconciling = threading.RLock()
    install_fork_guards([reconciling])

    def busy_logger():
        logging.getLogger("busy").info("a slow line from another thread")
    def busy_pass():
        with reconciling:
            time.sleep(0.6)
            finished["busy_pass"] = True  # still inside the pass

    for target in (busy_logger, busy_pass):
        thread = threading.Thread(target=target)
        thread.start()
        time.sleep(0.1)
        pid = os.fork()
        if pid == 0:
            # Both locks are free in the child: it logs and reconciles without hanging.
            with reconciling:
                logging.getLogger("child").info("child logged")
            os._exit(0)
        # The fork waited for the other thread to leave the handler / the pass.
        assert finished.get(target.__name__), f"{target.__name__}: fork did not wait"
        _, status = os.waitpid(pid, 0)
        thread.join()
        assert status == 0, status
    print("ok")
''')


def test_fork_waits_for_logging_handlers_and_reconciler_passes():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert out.stderr.count("child logged") == 2


def test_every_embedded_broker_query_holds_the_lock_a_fork_waits_for(tmp_path):
    """The main thread polls the SQLite broker while the pool forks from another thread; a fork
    inside a query left SQLite's mutexes held in the child, which hung at its first connect."""
    from kombu import Connection
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from worker.forking import BROKER_LOCK, guard_sqlalchemy_broker

    assert guard_sqlalchemy_broker() is BROKER_LOCK
    held: list[bool] = []

    def record(*_args):
        held.append(BROKER_LOCK._is_owned())

    event.listen(Engine, "before_cursor_execute", record)
    try:
        with Connection(f"sqla+sqlite:///{tmp_path}/broker.db") as connection:
            queue = connection.SimpleQueue("jobs")
            queue.put({"job": 1})
            message = queue.get(timeout=5)
            message.ack()
            assert message.payload == {"job": 1}
            queue.close()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert held and all(held), held
