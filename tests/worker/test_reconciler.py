"""The reconciler against a real job store and a real broker: the embedded SQLite
transport, and a redis-server on a free port."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import update

from service.control.queue import enqueue, make_celery
from service.store import JobStore, jobs, utcnow
from tests.worker.conftest import make_settings, pretrain_spec
from worker.reconciler import MAX_ATTEMPTS, Reconciler, pending_job_ids, reconcile

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
def store(broker_settings):
    store = JobStore(broker_settings.database_url)
    yield store
    store.dispose()


def age(store, job_id, seconds: float, **values) -> None:
    """Pretend the job's message was sent `seconds` ago (and set other columns)."""
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id)
                     .values(enqueued_at=utcnow() - timedelta(seconds=seconds), **values))


def expire_lease(store, job_id) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id)
                     .values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def test_pending_job_ids_sees_the_messages_waiting_in_the_broker(store, celery):
    assert pending_job_ids(celery, ["cpu", "gpu"]) == set()
    enqueue("job_aaaa", "cpu", app=celery)
    enqueue("job_bbbb", "gpu", app=celery)
    assert pending_job_ids(celery, ["cpu", "gpu"]) == {"job_aaaa", "job_bbbb"}
    assert pending_job_ids(celery, ["cpu"]) == {"job_aaaa"}


def test_a_queued_job_whose_message_was_lost_is_sent_again(store, broker_settings, celery):
    job = store.create_job("me", "pretrain", CPU_SPEC, queue="cpu")  # its message never reached the broker
    assert reconcile(store, broker_settings, celery) == []  # too recent to call lost
    age(store, job["id"], 60)
    assert reconcile(store, broker_settings, celery) == [(job["id"], "resent")]
    assert pending_job_ids(celery, ["cpu"]) == {job["id"]}
    # Sent once: the next pass finds its message waiting (and the job freshly enqueued).
    assert reconcile(store, broker_settings, celery) == []
    age(store, job["id"], 60)
    assert reconcile(store, broker_settings, celery) == []
    assert store.get_job(job["id"])["status"] == "queued"


def test_a_queued_job_waiting_behind_a_long_one_is_left_alone(store, broker_settings, celery):
    job = store.create_job("me", "pretrain", CPU_SPEC, queue="cpu")
    enqueue(job["id"], "cpu", app=celery)
    age(store, job["id"], 3600)
    assert reconcile(store, broker_settings, celery) == []


def test_a_running_job_whose_worker_died_is_requeued(store, broker_settings, celery):
    job = store.create_job("me", "pretrain", CPU_SPEC, queue="cpu")
    assert store.claim(job["id"], "dead-worker", lease_s=60)
    assert reconcile(store, broker_settings, celery) == []  # its lease is still live
    expire_lease(store, job["id"])
    assert reconcile(store, broker_settings, celery) == [(job["id"], "requeued")]
    requeued = store.get_job(job["id"])
    assert requeued["status"] == "queued" and requeued["worker"] is None and requeued["attempts"] == 1
    assert pending_job_ids(celery, ["cpu"]) == {job["id"]}
    assert store.claim(job["id"], "new-worker", lease_s=60)["attempts"] == 2


def test_a_dead_workers_job_with_a_cancel_request_ends_cancelled(store, broker_settings, celery):
    job = store.create_job("me", "pretrain", CPU_SPEC, queue="cpu")
    store.claim(job["id"], "dead-worker", lease_s=60)
    store.cancel(job["id"], "me")
    expire_lease(store, job["id"])
    assert reconcile(store, broker_settings, celery) == [(job["id"], "cancelled")]
    assert store.get_job(job["id"])["status"] == "cancelled"
    assert pending_job_ids(celery, ["cpu"]) == set()


def test_a_job_the_reconciler_cancels_lists_its_checkpoint(store, broker_settings, celery):
    job = store.create_job("me", "pretrain", CPU_SPEC, queue="cpu")
    store.claim(job["id"], "dead-worker", lease_s=60)
    checkpoints = broker_settings.artifacts_dir / job["id"] / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.pt").write_bytes(b"resumable state")  # what the dead worker left
    store.cancel(job["id"], "me")
    expire_lease(store, job["id"])
    assert reconcile(store, broker_settings, celery) == [(job["id"], "cancelled")]
    listed = {a["name"]: a for a in store.artifacts(job["id"])}
    assert listed["checkpoint.pt"]["size"] == len(b"resumable state")
    assert listed["checkpoint.pt"]["sha256"] == hashlib.sha256(b"resumable state").hexdigest()


def test_a_job_that_keeps_killing_its_worker_is_failed(store, broker_settings, celery):
    job = store.create_job("me", "pretrain", CPU_SPEC, queue="cpu")
    store.claim(job["id"], "dead-worker", lease_s=60)
    expire_lease(store, job["id"])
    age(store, job["id"], 0, attempts=MAX_ATTEMPTS)
    assert reconcile(store, broker_settings, celery) == [(job["id"], "failed")]
    failed = store.get_job(job["id"])
    assert failed["status"] == "failed" and f"{MAX_ATTEMPTS} times" in failed["error"]


def test_the_reconciler_thread_records_the_worker_and_requeues(store, broker_settings, celery):
    job = store.create_job("me", "pretrain", pretrain_spec(), queue="gpu")
    store.claim(job["id"], "dead-worker", lease_s=60)
    expire_lease(store, job["id"])
    reconciler = Reconciler(broker_settings, celery, interval_s=0.1, worker_info={"node": "dcl-test@host"})
    reconciler.start()
    try:
        import time

        deadline = time.monotonic() + 20
        while store.get_job(job["id"])["status"] != "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        reconciler.stop()
    assert [w["name"] for w in store.workers_seen(60)] == ["dcl-test@host", "dead-worker"]
    assert pending_job_ids(celery, ["gpu"]) == {job["id"]}


def test_a_pass_ends_the_leases_of_this_workers_dead_processes_and_requeues_their_jobs(
        store, broker_settings, celery):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pool process that died
    node = "dcl_a@host"
    dead = store.create_job("me", "pretrain", CPU_SPEC, queue="cpu")
    live = store.create_job("me", "pretrain", CPU_SPEC, queue="cpu")
    elsewhere = store.create_job("me", "pretrain", CPU_SPEC, queue="cpu")
    store.claim(dead["id"], f"{node}/{child.pid}", lease_s=60)
    store.claim(live["id"], f"{node}/{os.getpid()}", lease_s=60)
    store.claim(elsewhere["id"], f"dclxa@host/{child.pid}", lease_s=60)  # another worker (and `_` is no wildcard)
    reconciler = Reconciler(broker_settings, celery, interval_s=3600, worker_info={"node": node})
    assert reconciler.run_once() == [(dead["id"], "requeued")]
    assert store.get_job(dead["id"])["status"] == "queued"
    assert pending_job_ids(celery, ["cpu"]) == {dead["id"]}
    assert [store.get_job(j["id"])["status"] for j in (live, elsewhere)] == ["running", "running"]
