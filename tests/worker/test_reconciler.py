"""The reconciler against a real job store and a real broker: the embedded SQLite
transport, and a redis-server on a free port. The passes are called directly, on a fake
clock: a lease runs out, or a message grows old, when the test advances it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest

from service.control.clock import FakeClock
from service.control.lifecycle import Refused
from service.control.queue import enqueue, make_celery, pending_job_ids
from service.control.reconcile import MAX_ATTEMPTS, reconcile
from tests.fixtures.control import open_plane, submit
from tests.worker.conftest import make_settings, pretrain_spec
from worker.reconciler import Reconciler

CPU_SPEC = {"type": "pretrain", "config": {"device": "cpu"}}


@pytest.fixture(params=["sqlite", "redis"])
def broker_settings(request, tmp_path):
    overrides = {}
    if request.param == "redis":
        overrides["broker_url"] = request.getfixturevalue("redis_server")
    return make_settings(tmp_path / "data", **overrides)


@pytest.fixture
def celery(broker_settings):
    app = make_celery(broker_settings)
    yield app
    app.close()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def plane(broker_settings, celery, clock):
    with open_plane(broker_settings, celery=celery, clock=clock) as plane:
        yield plane


def lose_messages(celery, queue: str) -> None:
    """What waits in `queue` is gone (a Redis restarted without persistence, or a worker took it)."""
    with celery.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def delivered_to(plane, job, worker: str):
    """The job's message is taken by `worker`, which claims the job (and then dies, in these tests)."""
    lose_messages(plane.celery, job.queue)
    return plane.lifecycle.claim(job.id, worker)


def lease_runs_out(plane, clock) -> None:
    clock.advance(plane.settings.lease_seconds + 1)


def test_pending_job_ids_sees_the_messages_waiting_in_the_broker(celery):
    assert pending_job_ids(celery, ["cpu", "gpu"]) == set()
    enqueue("job_aaaa", "cpu", app=celery)
    enqueue("job_bbbb", "gpu", app=celery)
    assert pending_job_ids(celery, ["cpu", "gpu"]) == {"job_aaaa", "job_bbbb"}
    assert pending_job_ids(celery, ["cpu"]) == {"job_aaaa"}


def test_a_queued_job_whose_message_was_lost_is_sent_again(plane, clock, celery):
    job = submit(plane, "me", CPU_SPEC)
    assert pending_job_ids(celery, ["cpu"]) == {job.id}  # submit sent it
    lose_messages(celery, "cpu")  # ... and the broker lost it
    assert reconcile(plane) == []  # too recent to call lost
    clock.advance(60)
    assert reconcile(plane) == [(job.id, "resent")]
    assert pending_job_ids(celery, ["cpu"]) == {job.id}
    # Sent once: the next pass finds its message waiting (and the job freshly enqueued).
    assert reconcile(plane) == []
    clock.advance(60)
    assert reconcile(plane) == []
    assert plane.jobs.get(job.id).status == "queued"


def test_a_starting_workers_first_pass_resends_a_fresh_job_whose_message_is_gone(plane, clock, celery,
                                                                                broker_settings):
    """A job given back by a worker that shut down: that worker may have taken (and lost) its new
    message on its way out. The next worker's first pass sends it again without waiting."""
    job = submit(plane, "me", CPU_SPEC)
    lose_messages(celery, "cpu")
    clock.advance(1)  # a second, not the DCL_REQUEUE_AFTER_SECONDS a later pass waits
    reconciler = Reconciler(broker_settings, celery, plane=plane, worker_info={"node": "dcl-new@host"})
    assert reconciler.run_once() == [(job.id, "resent")]
    assert pending_job_ids(celery, ["cpu"]) == {job.id}
    lose_messages(celery, "cpu")
    assert reconciler.run_once() == []  # later passes wait DCL_REQUEUE_AFTER_SECONDS as before


def test_a_queued_job_waiting_behind_a_long_one_is_left_alone(plane, clock):
    submit(plane, "me", CPU_SPEC)  # its message waits in the broker
    clock.advance(3600)
    assert reconcile(plane) == []


def test_a_running_job_whose_worker_died_is_requeued(plane, clock, celery):
    job = submit(plane, "me", CPU_SPEC)
    delivered_to(plane, job, "dead-worker")
    assert reconcile(plane) == []  # its lease is still live
    lease_runs_out(plane, clock)
    assert reconcile(plane) == [(job.id, "requeued")]
    requeued = plane.jobs.get(job.id)
    assert requeued.status == "queued" and requeued.worker is None and requeued.attempts == 1
    assert pending_job_ids(celery, ["cpu"]) == {job.id}
    assert plane.lifecycle.claim(job.id, "new-worker").attempts == 2


def test_a_dead_workers_job_with_a_cancel_request_ends_cancelled(plane, clock, celery):
    job = submit(plane, "me", CPU_SPEC)
    delivered_to(plane, job, "dead-worker")
    plane.lifecycle.cancel(job.id, "me")
    lease_runs_out(plane, clock)
    assert reconcile(plane) == [(job.id, "cancelled")]
    assert plane.jobs.get(job.id).status == "cancelled"
    assert pending_job_ids(celery, ["cpu"]) == set()


def test_a_job_the_reconciler_cancels_lists_its_checkpoint(plane, clock, broker_settings):
    job = submit(plane, "me", CPU_SPEC)
    delivered_to(plane, job, "dead-worker")
    checkpoints = broker_settings.artifacts_dir / job.id / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.pt").write_bytes(b"resumable state")  # what the dead worker left
    plane.lifecycle.cancel(job.id, "me")
    lease_runs_out(plane, clock)
    assert reconcile(plane) == [(job.id, "cancelled")]
    listed = {a.name: a for a in plane.artifacts.list(job.id)}
    assert listed["checkpoint.pt"].size == len(b"resumable state")
    assert listed["checkpoint.pt"].sha256 == hashlib.sha256(b"resumable state").hexdigest()


def test_a_job_that_keeps_killing_its_worker_is_failed(plane, clock):
    job = submit(plane, "me", CPU_SPEC)
    for attempt in range(MAX_ATTEMPTS):  # each worker that takes it over dies too
        delivered_to(plane, job, f"dead-worker-{attempt}")
        lease_runs_out(plane, clock)
    assert plane.jobs.get(job.id).attempts == MAX_ATTEMPTS
    assert reconcile(plane) == [(job.id, "failed")]
    failed = plane.jobs.get(job.id)
    assert failed.status == "failed" and f"{MAX_ATTEMPTS} times" in failed.error
    with pytest.raises(Refused):
        plane.lifecycle.claim(job.id, "another-worker")


def test_the_reconciler_thread_records_the_worker_and_requeues(plane, clock, broker_settings, celery):
    job = submit(plane, "me", pretrain_spec())
    delivered_to(plane, job, "dead-worker")
    lease_runs_out(plane, clock)
    reconciler = Reconciler(broker_settings, celery, interval_s=0.1, plane=plane,
                            worker_info={"node": "dcl-test@host"})
    reconciler.start()
    try:
        deadline = time.monotonic() + 20
        while plane.jobs.get(job.id).status != "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        reconciler.stop()
    assert [w.name for w in plane.workers.seen_within(60)] == ["dcl-test@host", "dead-worker"]
    assert pending_job_ids(celery, [job.queue]) == {job.id}


def test_a_pass_ends_the_leases_of_this_workers_dead_processes_and_requeues_their_jobs(
        plane, broker_settings, celery):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pool process that died
    node = "dcl_a@host"
    dead = submit(plane, "me", CPU_SPEC)
    live = submit(plane, "me", CPU_SPEC)
    elsewhere = submit(plane, "me", CPU_SPEC)
    lose_messages(celery, "cpu")  # delivered to the three processes below
    plane.lifecycle.claim(dead.id, f"{node}/{child.pid}")
    plane.lifecycle.claim(live.id, f"{node}/{os.getpid()}")
    plane.lifecycle.claim(elsewhere.id, f"dclxa@host/{child.pid}")  # another worker (and `_` is no wildcard)
    reconciler = Reconciler(broker_settings, celery, interval_s=3600, plane=plane, worker_info={"node": node})
    assert reconciler.run_once() == [(dead.id, "requeued")]
    assert plane.jobs.get(dead.id).status == "queued"
    assert pending_job_ids(celery, ["cpu"]) == {dead.id}
    assert [plane.jobs.get(j.id).status for j in (live, elsewhere)] == ["running", "running"]
