"""The job store's parent/child jobs (a sweep and its members), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from service.control.lifecycle import CapReached, Refused
from service.control.models import ChildSummary, Job
from tests.fixtures.control import submit

PRETRAIN = {"type": "pretrain", "config": {"device": "cpu"}}


def make_sweep(plane, n=3, owner="alice", **kwargs) -> tuple[Job, list[Job]]:
    parent = submit(plane, owner, {"type": "sweep", "config": {"device": "cpu"}, "grid": {"seed": list(range(n))}},
                    **kwargs)
    return parent, plane.jobs.children(parent.id)


def test_children_keep_their_order_and_the_parent_holds_no_worker(plane):
    parent, children = make_sweep(plane)
    assert parent.status == "running" and parent.worker is None and parent.queue is None and parent.is_parent
    assert [c.parent_id for c in children] == [parent.id] * 3
    assert [c.spec.config.seed for c in children] == [0, 1, 2] and {c.queue for c in children} == {"cpu"}
    listed, total = plane.jobs.list("alice", parent=parent.id)
    assert total == 3 and [c.id for c in reversed(listed)] == [c.id for c in children]
    with pytest.raises(Refused):
        plane.lifecycle.claim(parent.id, "w")  # never run by a worker
    assert plane.jobs.count_active("alice") == 3  # the members count, the sweep does not
    assert plane.jobs.stale(queued_older_than_s=1e9) == []


def test_children_summary_counts_and_sums_progress(plane):
    lifecycle = plane.lifecycle
    parent, (a, b, c) = make_sweep(plane)
    lifecycle.claim(a.id, "w")
    lifecycle.progress(a.id, "w", step=5, total_steps=10)
    lifecycle.claim(b.id, "w")
    lifecycle.fail(b.id, "boom", worker="w")
    summary = plane.jobs.children_summary([parent.id])[parent.id]
    assert isinstance(summary, ChildSummary)
    assert summary.counts == {"total": 3, "queued": 1, "running": 1, "succeeded": 0, "failed": 1, "cancelled": 0}
    assert summary.fraction == (0.5 + 1.0 + 0.0) / 3
    assert summary.total_steps is None  # c has not started: its size is unknown
    assert plane.jobs.unsettled_parents() == []


def test_settle_is_once_and_only_when_every_child_is_final(plane):
    lifecycle = plane.lifecycle
    parent, children = make_sweep(plane, n=2)
    with pytest.raises(Refused):
        lifecycle.settle(parent.id)  # children still queued
    assert not lifecycle.settle_if_done(parent.id)
    for child in children:
        lifecycle.cancel(child.id)
    assert plane.jobs.unsettled_parents() == [parent.id]
    lifecycle.settle(parent.id)
    settled = plane.jobs.get(parent.id)
    assert settled.status == "succeeded" and settled.finished_at is not None
    assert [row["job_id"] for row in settled.result["rows"]] == [c.id for c in children]
    assert {a.name for a in plane.artifacts.list(parent.id)} == {"results.json", "results.csv"}
    with pytest.raises(Refused):
        lifecycle.settle(parent.id)  # once
    assert plane.jobs.get(parent.id).result == settled.result
    assert plane.jobs.unsettled_parents() == []

    # A retried member reopens its sweep; a stale settle can no longer close it.
    lifecycle.retry(children[0].id)
    with pytest.raises(Refused) as missing:
        lifecycle.retry("job_missing")
    assert missing.value.missing
    assert plane.jobs.get(parent.id).status == "running"
    assert plane.jobs.get(children[0].id).status == "queued"
    with pytest.raises(Refused):
        lifecycle.settle(parent.id)
    with pytest.raises(Refused):
        lifecycle.retry(children[0].id)  # only failed or cancelled jobs


def test_cancel_and_delete_cascade_to_children(plane):
    lifecycle = plane.lifecycle
    parent, (a, b) = make_sweep(plane, n=2)
    lifecycle.claim(a.id, "w")
    lifecycle.cancel(parent.id, "alice")
    assert plane.jobs.get(b.id).status == "cancelled"
    assert plane.jobs.get(a.id).cancel_requested and plane.jobs.get(a.id).status == "running"
    assert plane.jobs.get(parent.id).status == "running"  # settled once its running member stops
    with pytest.raises(Refused):
        lifecycle.delete(parent.id, "alice")  # a member still runs
    lifecycle.progress(a.id, "w", step=1, rows=[{"step": 1, "loss": 1.0}])
    checkpoints = plane.storage.run_dir(a.id) / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.pt").write_bytes(b"abc")
    lifecycle.stopped(a.id, worker="w")
    assert [(f.name, f.size) for f in plane.artifacts.list(a.id)] == [("checkpoint.pt", 3)]
    assert plane.jobs.get(parent.id).status == "cancelled"  # its last member's end settled it
    with pytest.raises(Refused) as refused:
        lifecycle.delete(parent.id, "bob")  # not bob's
    assert refused.value.missing
    assert sorted(lifecycle.delete(parent.id, "alice")) == sorted([parent.id, a.id, b.id])
    assert plane.jobs.get(a.id) is None and plane.artifacts.list(a.id) == [] and plane.metrics.since(a.id) == []
    assert not plane.storage.run_dir(a.id).exists() and not plane.storage.run_dir(parent.id).exists()


def test_a_sweep_that_would_pass_the_cap_makes_nothing(plane):
    submit(plane, "alice", PRETRAIN)
    with pytest.raises(CapReached):
        make_sweep(plane, n=3, max_active=3)
    assert plane.jobs.list("alice")[1] == 1
    parent, children = make_sweep(plane, n=2, max_active=3)
    assert len(children) == 2 and plane.jobs.count_active("alice") == 3
