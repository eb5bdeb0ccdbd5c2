"""The job store's parent/child jobs (a sweep and its members), on SQLite and PostgreSQL."""

from __future__ import annotations

PRETRAIN = {"type": "pretrain", "config": {}}


def make_sweep(store, n=3, owner="alice"):
    return store.create_parent(owner, "sweep", {"type": "sweep", "grid": {"seed": list(range(n))}},
                               [("pretrain", PRETRAIN, "cpu")] * n)


def test_children_keep_their_order_and_the_parent_holds_no_worker(store):
    parent, children = make_sweep(store)
    assert parent["status"] == "running" and parent["worker"] is None and parent["queue"] is None
    assert [c["parent_id"] for c in children] == [parent["id"]] * 3
    listed, total = store.list_jobs("alice", parent=parent["id"])
    assert total == 3 and [c["id"] for c in reversed(listed)] == [c["id"] for c in children]
    assert store.claim(parent["id"], "w", 60) is None  # never run by a worker
    assert store.count_active("alice") == 3  # the members count, the sweep does not
    assert store.stale_jobs(queued_older_than_s=1e9) == []


def test_children_summary_counts_and_sums_progress(store):
    parent, (a, b, c) = make_sweep(store)
    store.claim(a["id"], "w", 60)
    store.report(a["id"], "w", step=5, total_steps=10)
    store.claim(b["id"], "w", 60)
    store.fail(b["id"], "w", "boom")
    summary = store.children_summary([parent["id"]])[parent["id"]]
    assert summary["counts"] == {"total": 3, "queued": 1, "running": 1, "succeeded": 0, "failed": 1, "cancelled": 0}
    assert summary["fraction"] == (0.5 + 1.0 + 0.0) / 3
    assert summary["total_steps"] is None  # c has not started: its size is unknown
    assert store.unsettled_parents() == []


def test_settle_is_once_and_only_when_every_child_is_final(store):
    parent, children = make_sweep(store, n=2)
    assert not store.settle_parent(parent["id"], "succeeded", {"rows": []})  # children still queued
    for child in children:
        store.cancel(child["id"])
    assert store.unsettled_parents() == [parent["id"]]
    assert store.settle_parent(parent["id"], "succeeded", {"rows": [1]}, [("results.json", 2, "0" * 64)])
    assert not store.settle_parent(parent["id"], "succeeded", {"rows": [2]})
    assert store.get_job(parent["id"])["result"] == {"rows": [1]}
    assert store.unsettled_parents() == []

    # A retried member reopens its sweep; a stale settle can no longer close it.
    assert store.retry([children[0]["id"], "job_missing"]) == [children[0]["id"]]
    assert store.get_job(parent["id"])["status"] == "running"
    assert store.get_job(children[0]["id"])["status"] == "queued"
    assert not store.settle_parent(parent["id"], "succeeded", {"rows": [3]})
    assert store.retry([children[0]["id"]]) == []  # only failed or cancelled jobs


def test_cancel_and_delete_cascade_to_children(store):
    parent, (a, b) = make_sweep(store, n=2)
    store.claim(a["id"], "w", 60)
    store.cancel(parent["id"], "alice")
    assert store.get_job(b["id"])["status"] == "cancelled"
    assert store.get_job(a["id"])["cancel_requested"] and store.get_job(a["id"])["status"] == "running"
    assert store.delete_job(parent["id"], "alice") is None  # a member still runs
    store.report(a["id"], "w", step=1, metrics_rows=[{"step": 1, "loss": 1.0}])
    store.mark_cancelled(a["id"], "w", [("checkpoint.pt", 3, "0" * 64)])
    assert store.delete_job(parent["id"], "alice") is None  # the sweep itself is not settled yet
    assert store.settle_parent(parent["id"], "cancelled", {"rows": []})
    assert store.delete_job(parent["id"], "bob") is None  # not bob's
    assert sorted(store.delete_job(parent["id"], "alice")) == sorted([parent["id"], a["id"], b["id"]])
    assert store.get_job(a["id"]) is None and store.artifacts(a["id"]) == [] and store.metrics(a["id"]) == []


def test_a_sweep_that_would_pass_the_cap_makes_nothing(store):
    store.create_job("alice", "pretrain", PRETRAIN)
    assert store.create_parent("alice", "sweep", {"type": "sweep"}, [("pretrain", PRETRAIN, "cpu")] * 3,
                               max_active=3) is None
    assert store.list_jobs("alice")[1] == 1
    made = store.create_parent("alice", "sweep", {"type": "sweep"}, [("pretrain", PRETRAIN, "cpu")] * 2,
                               max_active=3)
    assert made is not None and store.count_active("alice") == 3
