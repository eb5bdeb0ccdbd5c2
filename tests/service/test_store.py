"""The job store's state transitions (lifecycle events and repository reads) on SQLite and
PostgreSQL (the `plane` fixture runs each test on both). Time is the fake `clock` of the
fixture: a lease runs out when the test advances it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from dcl_core.jobs.pretrain import PretrainJob
from service.control.lifecycle import Refused
from service.control.models import ArtifactFile, Job
from service.control.plane import ControlPlane
from tests.fixtures.control import submit

SPEC = {"type": "pretrain", "config": {"epochs": 1}}


def new_job(plane: ControlPlane, owner: str = "alice") -> Job:
    return submit(plane, owner, SPEC)


def claim(plane: ControlPlane, job_id: str, worker: str, **kwargs) -> Job | None:
    """The claimed job, or None when the claim is refused."""
    try:
        return plane.lifecycle.claim(job_id, worker, **kwargs)
    except Refused:
        return None


def lease_runs_out(plane: ControlPlane, clock) -> None:
    clock.advance(plane.settings.lease_seconds + 1)


def test_created_job_is_queued_with_its_spec(plane):
    job = new_job(plane)
    assert job.id.startswith("job_")
    assert job.status == "queued" and job.attempts == 0 and job.step == 0
    assert job.spec_data == PretrainJob(config={"epochs": 1}).model_dump(mode="json")
    assert isinstance(job.spec, PretrainJob) and job.spec.config.epochs == 1
    assert job.queue == "gpu"
    assert job.created_at.tzinfo is not None
    assert plane.jobs.get(job.id, "alice").id == job.id
    assert plane.jobs.get(job.id, "bob") is None
    assert plane.jobs.owns(job.id, "alice") and not plane.jobs.owns(job.id, "bob")


def test_only_one_of_many_concurrent_claims_wins(plane):
    job = new_job(plane)
    barrier = threading.Barrier(8)

    def attempt(i: int):
        barrier.wait()
        return claim(plane, job.id, f"worker-{i}")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    row = plane.jobs.get(job.id)
    assert row.status == "running" and row.attempts == 1 and row.worker == winners[0].worker


def test_expired_lease_can_be_reclaimed_and_attempts_are_counted(plane, clock):
    lifecycle = plane.lifecycle
    job = new_job(plane)
    assert claim(plane, job.id, "w1") is not None
    assert claim(plane, job.id, "w2") is None  # w1 still holds it
    lease_runs_out(plane, clock)
    again = claim(plane, job.id, "w2")
    assert again is not None and again.worker == "w2" and again.attempts == 2
    # The first worker lost it: its heartbeat, reports and finish no longer land.
    with pytest.raises(Refused):
        lifecycle.heartbeat(job.id, "w1")
    with pytest.raises(Refused):
        lifecycle.progress(job.id, "w1", 5, total_steps=10, epoch=0.5, rows=[{"step": 5, "loss": -1.0}])
    with pytest.raises(Refused):
        lifecycle.succeed(job.id, "w1", {"x": 1})
    lifecycle.heartbeat(job.id, "w2")
    assert plane.metrics.since(job.id) == []


def test_a_dead_holders_live_lease_is_taken_over_only_when_named(plane):
    job = new_job(plane)
    assert claim(plane, job.id, "node/11") is not None
    assert claim(plane, job.id, "node/12", dead_holder="node/99") is None  # not the holder
    taken = claim(plane, job.id, "node/12", dead_holder="node/11")
    assert taken.worker == "node/12" and taken.attempts == 2
    with pytest.raises(Refused):
        plane.lifecycle.heartbeat(job.id, "node/11")
    plane.lifecycle.cancel(job.id, "alice")  # a cancel request is never overridden by a takeover
    assert claim(plane, job.id, "node/13", dead_holder="node/12") is None


def test_a_workers_running_jobs_are_found_by_its_node_and_their_leases_ended(plane):
    mine, other = new_job(plane), new_job(plane)
    claim(plane, mine.id, "n_1@h/10")
    claim(plane, other.id, "nx1@h/10")  # `_` matches itself only
    assert [(j.id, j.worker) for j in plane.jobs.running_held_by("n_1@h/")] == [(mine.id, "n_1@h/10")]
    with pytest.raises(Refused):
        plane.lifecycle.expire_lease(mine.id, "n_1@h/11")  # not its holder
    plane.lifecycle.expire_lease(mine.id, "n_1@h/10")
    stale = plane.jobs.stale(queued_older_than_s=plane.settings.requeue_after_seconds)
    assert [j.id for j in stale] == [mine.id]


def test_release_undoes_a_claim_without_counting_it(plane):
    job = new_job(plane)
    claim(plane, job.id, "w1")
    with pytest.raises(Refused):
        plane.lifecycle.release(job.id, "w2")  # only the holder may
    plane.lifecycle.release(job.id, "w1")
    row = plane.jobs.get(job.id)
    assert row.status == "queued" and row.worker is None and row.attempts == 0
    assert claim(plane, job.id, "w2").attempts == 1


def test_heartbeat_keeps_the_lease(plane, clock):
    job = new_job(plane)
    claim(plane, job.id, "w1")
    for _ in range(3):  # 1.5 leases in all: without the heartbeats it would have run out
        clock.advance(plane.settings.lease_seconds / 2)
        plane.lifecycle.heartbeat(job.id, "w1")
    assert claim(plane, job.id, "w2") is None


def test_metrics_rewritten_after_a_resume_are_not_duplicated(plane, clock):
    progress = plane.lifecycle.progress
    job = new_job(plane)
    claim(plane, job.id, "w1")
    progress(job.id, "w1", 30, total_steps=60, epoch=1.0, rows=[{"step": s, "loss": -float(s)} for s in (10, 20, 30)])
    lease_runs_out(plane, clock)
    claim(plane, job.id, "w2")  # resumed from a checkpoint at step 20
    progress(job.id, "w2", 40, total_steps=60, epoch=1.3, rows=[{"step": s, "loss": -100.0 - s} for s in (30, 40)])
    rows = plane.metrics.since(job.id)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert [r["attempt"] for r in rows] == [1, 1, 2, 2]
    assert rows[2]["loss"] == -130.0
    assert [r["step"] for r in plane.metrics.since(job.id, since_step=20)] == [30, 40]
    latest = plane.jobs.get(job.id)
    assert latest.step == 40 and latest.latest_metrics == {"step": 40, "loss": -140.0}


def test_non_finite_metrics_are_stored_as_null(plane):
    job = new_job(plane)
    claim(plane, job.id, "w1")
    plane.lifecycle.progress(job.id, "w1", 1, total_steps=2,
                             rows=[{"step": 1, "loss": float("nan"), "lr": float("inf")}])
    assert plane.metrics.since(job.id) == [{"step": 1, "attempt": 1, "loss": None, "lr": None}]


def test_finish_records_result_and_artifacts(plane):
    job = new_job(plane)
    claim(plane, job.id, "w1")
    plane.artifacts.put(job.id, [ArtifactFile("checkpoint.pt", 10, "a" * 64)])
    plane.lifecycle.succeed(job.id, "w1", {"loss": -3.0}, [ArtifactFile("encoder.safetensors", 123, "b" * 64)])
    done = plane.jobs.get(job.id)
    assert done.status == "succeeded" and done.result == {"loss": -3.0} and done.finished_at
    assert done.terminal and not done.active
    assert [a.name for a in plane.artifacts.list(job.id)] == ["checkpoint.pt", "encoder.safetensors"]
    assert plane.artifacts.get(job.id, "encoder.safetensors").sha256 == "b" * 64
    assert plane.datasets.stored_bytes("alice") == 133
    assert claim(plane, job.id, "w2") is None  # finished jobs never run again


def test_fail_keeps_the_message(plane):
    job = new_job(plane)
    claim(plane, job.id, "w1")
    plane.lifecycle.fail(job.id, "loss became NaN at step 7; lower lr", worker="w1")
    row = plane.jobs.get(job.id)
    assert row.status == "failed" and "NaN at step 7" in row.error


def test_cancel_queued_job_is_immediate_and_it_never_starts(plane):
    job = new_job(plane)
    with pytest.raises(Refused) as refused:
        plane.lifecycle.cancel(job.id, "bob")  # not bob's
    assert refused.value.missing
    cancelled = plane.lifecycle.cancel(job.id, "alice")
    assert cancelled.status == "cancelled"
    assert claim(plane, job.id, "w1") is None


def test_cancel_running_job_sets_the_flag_for_the_worker(plane):
    job = new_job(plane)
    claim(plane, job.id, "w1")
    assert not plane.jobs.is_cancel_requested(job.id)
    row = plane.lifecycle.cancel(job.id, "alice")
    assert row.status == "running" and row.cancel_requested
    assert plane.jobs.is_cancel_requested(job.id)
    plane.lifecycle.stopped(job.id, worker="w1")
    assert plane.jobs.get(job.id).status == "cancelled"


def test_stale_jobs_and_requeue(plane, clock):
    old = new_job(plane)
    fresh = new_job(plane)
    running = new_job(plane)
    claim(plane, running.id, "w1")
    lease_runs_out(plane, clock)

    def stale(**kwargs) -> set[str]:
        return {j.id for j in plane.jobs.stale(queued_older_than_s=5, **kwargs)}

    assert stale() == {old.id, fresh.id, running.id}
    plane.lifecycle.mark_sent(fresh.id)
    assert stale() == {old.id, running.id}
    assert stale(now=clock.now() + timedelta(seconds=10)) == {old.id, fresh.id, running.id}
    plane.lifecycle.requeue(running.id)
    row = plane.jobs.get(running.id)
    assert row.status == "queued" and row.worker is None
    with pytest.raises(Refused):
        plane.lifecycle.requeue(running.id)  # only a running job whose lease ran out
    assert claim(plane, running.id, "w2").attempts == 2


def test_list_jobs_filters_and_pages(plane):
    ids = [new_job(plane).id for _ in range(5)]
    new_job(plane, owner="bob")
    plane.lifecycle.cancel(ids[0], "alice")
    items, total = plane.jobs.list("alice", limit=2, offset=0)
    assert total == 5 and len(items) == 2
    items, total = plane.jobs.list("alice", status="cancelled")
    assert total == 1 and items[0].id == ids[0]
    assert plane.jobs.count_active("alice") == 4
    assert plane.jobs.count_by_status()["queued"] == 5


def test_datasets_belong_to_their_owner(plane):
    datasets = plane.datasets
    ds = datasets.create("alice", "pets.zip", {"num_images": 6}, 1000)
    assert ds.id.startswith("ds_") and ds.num_images == 6
    assert datasets.get(ds.id, "bob") is None
    assert datasets.list("bob")[1] == 0
    assert datasets.list("alice")[1] == 1
    assert datasets.stored_bytes("alice") == 1000
    assert not datasets.delete(ds.id, "bob")
    assert datasets.delete(ds.id, "alice")
    assert datasets.get(ds.id) is None


def test_workers_seen_through_claims_and_sightings(plane):
    plane.workers.seen("idle@host", {"queues": "gpu"})
    job = new_job(plane)
    claim(plane, job.id, "busy@host")
    names = {w.name for w in plane.workers.seen_within(60)}
    assert names == {"idle@host", "busy@host"}
