"""JobStore state transitions on SQLite and PostgreSQL (the `store` fixture runs each test on both)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from service.store import JobStore, utcnow


def new_job(store: JobStore, owner: str = "alice") -> dict:
    return store.create_job(owner, "pretrain", {"type": "pretrain", "config": {"epochs": 1}}, queue="gpu")


def test_created_job_is_queued_with_its_spec(store):
    job = new_job(store)
    assert job["id"].startswith("job_")
    assert job["status"] == "queued" and job["attempts"] == 0 and job["step"] == 0
    assert job["spec"] == {"type": "pretrain", "config": {"epochs": 1}}
    assert job["created_at"].tzinfo is not None
    assert store.get_job(job["id"], "alice")["id"] == job["id"]
    assert store.get_job(job["id"], "bob") is None


def test_only_one_of_many_concurrent_claims_wins(store):
    job = new_job(store)
    barrier = threading.Barrier(8)

    def claim(i: int):
        barrier.wait()
        return store.claim(job["id"], f"worker-{i}", lease_s=60)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(claim, range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    row = store.get_job(job["id"])
    assert row["status"] == "running" and row["attempts"] == 1 and row["worker"] == winners[0]["worker"]


def test_expired_lease_can_be_reclaimed_and_attempts_are_counted(store):
    job = new_job(store)
    assert store.claim(job["id"], "w1", lease_s=0.2) is not None
    assert store.claim(job["id"], "w2", lease_s=60) is None  # w1 still holds it
    time.sleep(0.3)
    again = store.claim(job["id"], "w2", lease_s=60)
    assert again is not None and again["worker"] == "w2" and again["attempts"] == 2
    # The first worker lost it: its heartbeat, reports and finish no longer land.
    assert store.heartbeat(job["id"], "w1", 60) is False
    assert store.report(job["id"], "w1", 5, 10, 0.5, [{"step": 5, "loss": -1.0}]) is False
    assert store.finish(job["id"], "w1", {"x": 1}) is False
    assert store.heartbeat(job["id"], "w2", 60) is True


def test_a_dead_holders_live_lease_is_taken_over_only_when_named(store):
    job = new_job(store)
    assert store.claim(job["id"], "node/11", lease_s=60) is not None
    assert store.claim(job["id"], "node/12", lease_s=60, dead_holder="node/99") is None  # not the holder
    taken = store.claim(job["id"], "node/12", lease_s=60, dead_holder="node/11")
    assert taken["worker"] == "node/12" and taken["attempts"] == 2
    assert store.heartbeat(job["id"], "node/11", 60) is False
    store.cancel(job["id"], "alice")  # a cancel request is never overridden by a takeover
    assert store.claim(job["id"], "node/13", lease_s=60, dead_holder="node/12") is None


def test_a_workers_running_jobs_are_found_by_its_node_and_their_leases_ended(store):
    mine, other = new_job(store), new_job(store)
    store.claim(mine["id"], "n_1@h/10", lease_s=60)
    store.claim(other["id"], "nx1@h/10", lease_s=60)  # `_` matches itself only
    assert store.running_held_by("n_1@h/") == [{"id": mine["id"], "worker": "n_1@h/10"}]
    assert store.expire_lease(mine["id"], "n_1@h/11") is False  # not its holder
    assert store.expire_lease(mine["id"], "n_1@h/10") is True
    assert [j["id"] for j in store.stale_jobs()] == [mine["id"]]


def test_release_undoes_a_claim_without_counting_it(store):
    job = new_job(store)
    store.claim(job["id"], "w1", lease_s=60)
    assert store.release(job["id"], "w2") is False  # only the holder may
    assert store.release(job["id"], "w1") is True
    row = store.get_job(job["id"])
    assert row["status"] == "queued" and row["worker"] is None and row["attempts"] == 0
    assert store.claim(job["id"], "w2", lease_s=60)["attempts"] == 1


def test_heartbeat_keeps_the_lease(store):
    job = new_job(store)
    store.claim(job["id"], "w1", lease_s=0.5)
    for _ in range(3):
        time.sleep(0.25)
        assert store.heartbeat(job["id"], "w1", lease_s=0.5)
    assert store.claim(job["id"], "w2", lease_s=60) is None


def test_metrics_rewritten_after_a_resume_are_not_duplicated(store):
    job = new_job(store)
    store.claim(job["id"], "w1", lease_s=0.1)
    assert store.report(job["id"], "w1", 30, 60, 1.0, [{"step": s, "loss": -float(s)} for s in (10, 20, 30)])
    time.sleep(0.2)
    store.claim(job["id"], "w2", lease_s=60)  # resumed from a checkpoint at step 20
    assert store.report(job["id"], "w2", 40, 60, 1.3, [{"step": s, "loss": -100.0 - s} for s in (30, 40)])
    rows = store.metrics(job["id"])
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert [r["attempt"] for r in rows] == [1, 1, 2, 2]
    assert rows[2]["loss"] == -130.0
    assert [r["step"] for r in store.metrics(job["id"], since_step=20)] == [30, 40]
    latest = store.get_job(job["id"])
    assert latest["step"] == 40 and latest["latest_metrics"] == {"step": 40, "loss": -140.0}


def test_non_finite_metrics_are_stored_as_null(store):
    job = new_job(store)
    store.claim(job["id"], "w1", 60)
    assert store.report(job["id"], "w1", 1, 2, None, [{"step": 1, "loss": float("nan"), "lr": float("inf")}])
    assert store.metrics(job["id"]) == [{"step": 1, "attempt": 1, "loss": None, "lr": None}]


def test_finish_records_result_and_artifacts(store):
    job = new_job(store)
    store.claim(job["id"], "w1", 60)
    store.add_artifact(job["id"], "checkpoint.pt", 10, "a" * 64)
    assert store.finish(job["id"], "w1", {"loss": -3.0}, [("encoder.safetensors", 123, "b" * 64)])
    done = store.get_job(job["id"])
    assert done["status"] == "succeeded" and done["result"] == {"loss": -3.0} and done["finished_at"]
    assert [a["name"] for a in store.artifacts(job["id"])] == ["checkpoint.pt", "encoder.safetensors"]
    assert store.get_artifact(job["id"], "encoder.safetensors")["sha256"] == "b" * 64
    assert store.stored_bytes("alice") == 133
    assert store.claim(job["id"], "w2", 60) is None  # finished jobs never run again


def test_fail_keeps_the_message(store):
    job = new_job(store)
    store.claim(job["id"], "w1", 60)
    assert store.fail(job["id"], "w1", "loss became NaN at step 7; lower lr")
    row = store.get_job(job["id"])
    assert row["status"] == "failed" and "NaN at step 7" in row["error"]


def test_cancel_queued_job_is_immediate_and_it_never_starts(store):
    job = new_job(store)
    assert store.cancel(job["id"], "bob") is None  # not bob's
    cancelled = store.cancel(job["id"], "alice")
    assert cancelled["status"] == "cancelled"
    assert store.claim(job["id"], "w1", 60) is None


def test_cancel_running_job_sets_the_flag_for_the_worker(store):
    job = new_job(store)
    store.claim(job["id"], "w1", 60)
    assert not store.is_cancel_requested(job["id"])
    row = store.cancel(job["id"], "alice")
    assert row["status"] == "running" and row["cancel_requested"]
    assert store.is_cancel_requested(job["id"])
    assert store.mark_cancelled(job["id"], "w1")
    assert store.get_job(job["id"])["status"] == "cancelled"


def test_stale_jobs_and_requeue(store):
    old = new_job(store)
    fresh = new_job(store)
    running = new_job(store)
    store.claim(running["id"], "w1", lease_s=0.1)
    time.sleep(0.2)
    later = utcnow() + timedelta(seconds=10)
    stale = {j["id"] for j in store.stale_jobs(later, queued_older_than_s=5)}
    assert stale == {old["id"], fresh["id"], running["id"]}
    store.mark_enqueued(fresh["id"])
    assert {j["id"] for j in store.stale_jobs(queued_older_than_s=5)} == {running["id"]}
    assert store.requeue(running["id"])
    row = store.get_job(running["id"])
    assert row["status"] == "queued" and row["worker"] is None
    assert store.claim(running["id"], "w2", 60)["attempts"] == 2


def test_list_jobs_filters_and_pages(store):
    ids = [new_job(store)["id"] for _ in range(5)]
    new_job(store, owner="bob")
    store.cancel(ids[0], "alice")
    items, total = store.list_jobs("alice", limit=2, offset=0)
    assert total == 5 and len(items) == 2
    items, total = store.list_jobs("alice", status="cancelled")
    assert total == 1 and items[0]["id"] == ids[0]
    assert store.count_active("alice") == 4
    assert store.count_jobs_by_status()["queued"] == 5


def test_datasets_belong_to_their_owner(store):
    ds = store.create_dataset("alice", "pets.zip", {"num_images": 6}, 1000)
    assert ds["id"].startswith("ds_")
    assert store.get_dataset(ds["id"], "bob") is None
    assert store.list_datasets("bob")[1] == 0
    assert store.list_datasets("alice")[1] == 1
    assert store.stored_bytes("alice") == 1000
    assert not store.delete_dataset(ds["id"], "bob")
    assert store.delete_dataset(ds["id"], "alice")
    assert store.get_dataset(ds["id"]) is None


def test_workers_seen_through_claims_and_sightings(store):
    store.worker_seen("idle@host", {"queues": "gpu"})
    job = new_job(store)
    store.claim(job["id"], "busy@host", 60)
    names = {w["name"] for w in store.workers_seen(60)}
    assert names == {"idle@host", "busy@host"}
