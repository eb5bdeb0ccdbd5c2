"""A worker shutting down (SIGTERM: Celery's warm shutdown) gives its running jobs back: they
stop at their next step, checkpoint and return to the queue, and the next worker resumes them."""

from __future__ import annotations

import ctypes
import multiprocessing

import pytest
from celery.signals import worker_shutting_down

from tests.fixtures.control import submit
from tests.worker.conftest import JobThread, long_config, pretrain_spec
from tests.fixtures.waiting import wait_until
from worker import shutdown
from worker.tasks import execute_job


@pytest.fixture
def flag(monkeypatch):
    monkeypatch.setattr(shutdown, "_flag", multiprocessing.get_context("fork").RawValue(ctypes.c_bool, False))


def test_a_running_job_is_checkpointed_and_given_back_at_shutdown(plane, settings, flag):
    job = submit(plane, "me", pretrain_spec(long_config(epochs=2, checkpoint_every_steps=1000)))
    thread = JobThread(job.id, plane, worker="w1")
    thread.start()
    wait_until(lambda: plane.jobs.get(job.id).step >= 2, what="two steps")
    shutdown.request()
    assert thread.result(30) == "released"
    back = plane.jobs.get(job.id)
    assert back.status == "queued" and back.worker is None and back.attempts == 0  # not the job's fault
    assert (settings.artifacts_dir / job.id / "checkpoints" / "last.pt").exists()  # written at the stop

    shutdown._flag.value = False  # the next worker
    assert execute_job(job.id, plane=plane, worker="w2") == "succeeded"
    rows = plane.metrics.since(job.id)
    assert [r["step"] for r in rows] == list(range(1, plane.jobs.get(job.id).total_steps + 1))


def test_a_worker_shutting_down_claims_nothing(plane, flag):
    job = submit(plane, "me", pretrain_spec())
    shutdown.request()
    assert execute_job(job.id, plane=plane, worker="w1") == "skipped"
    assert plane.jobs.get(job.id).status == "queued"


def test_a_job_cancelled_as_the_worker_shuts_down_ends_cancelled(plane, flag):
    job = submit(plane, "me", pretrain_spec(long_config()))
    thread = JobThread(job.id, plane, worker="w1")
    thread.start()
    wait_until(lambda: plane.jobs.get(job.id).step >= 2, what="two steps")
    plane.lifecycle.cancel(job.id, "me")
    shutdown.request()
    assert thread.result(30) == "cancelled"
    assert plane.jobs.get(job.id).status == "cancelled"


def test_the_warm_shutdown_signal_sets_the_flag_a_forked_job_process_reads(monkeypatch):
    monkeypatch.setattr(shutdown, "_flag", None)
    assert not shutdown.requested()
    shutdown.arm()
    try:
        context = multiprocessing.get_context("fork")
        seen = context.Queue()
        child = context.Process(target=lambda: seen.put(_wait_for_flag()))
        child.start()  # forked before the signal, as a pool process is
        worker_shutting_down.send(sender="dcl-1@box", sig="SIGTERM", how="Warm", exitcode=0)
        assert shutdown.requested()
        assert seen.get(timeout=30) is True
        child.join(10)
    finally:
        worker_shutting_down.disconnect(shutdown._on_shutdown)


def _wait_for_flag() -> bool:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if shutdown.requested():
            return True
        time.sleep(0.01)
    return False
