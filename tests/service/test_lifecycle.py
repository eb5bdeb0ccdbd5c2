"""The job lifecycle, event by state: every allowed transition moves the job to the state the
table says, with its side effects (broker messages, recorded files, deleted folders) done once;
every other pair is refused with an error naming the event and the state. A job that reaches
succeeded, failed or cancelled has its webhook event recorded, once. On SQLite and PostgreSQL,
on a clock the test moves (no sleeping)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dcl_core.jobs.pretrain import PretrainJob
from service.control.clock import FakeClock
from service.control.db import Database
from service.control.lifecycle import Refused
from service.control.models import ArtifactFile
from service.control.plane import ControlPlane
from service.control.queue import _job_id_of
from service.control.settings import Settings
from service.control.webhooks import EVENTS as HOOK_EVENTS

LEASE_S = 60.0
SPEC = PretrainJob.model_validate({"config": {"encoder": "convnet_small", "device": "cpu", "batch_size": 16,
                                              "dataset": {"source": "builtin:digits", "image_size": 16}}})
STATES = ("queued", "running", "lease_expired", "cancel_requested", "succeeded", "failed", "cancelled")


@pytest.fixture(params=["sqlite", "postgres"])
def plane(request, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", lease_seconds=LEASE_S)
    settings.ensure_dirs()
    if request.param == "sqlite":
        db = Database(settings.database_url)
    else:
        db = Database(request.getfixturevalue("postgres_url"), schema=f"dcl_test_{secrets.token_hex(6)}")
    plane = ControlPlane(settings, db=db, clock=FakeClock())
    plane.webhooks.create("alice", "https://hooks.example/dcl", list(HOOK_EVENTS))  # its events are recorded
    yield plane
    if request.param == "postgres":
        db.drop()
    plane.close()


def messages(plane: ControlPlane) -> list[str]:
    """Job ids of the messages waiting in the embedded (SQLite) broker, one entry a message."""
    engine = create_engine(plane.settings.broker_url.removeprefix("sqla+"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT payload FROM kombu_message")).all()
    except Exception:  # no message was ever sent: no tables yet
        return []
    finally:
        engine.dispose()
    return [_job_id_of(payload) for (payload,) in rows]


def make(plane: ControlPlane, state: str) -> str:
    """A job in `state` (held by w1 while running), with a checkpoint written by its run."""
    lc, clock = plane.lifecycle, plane.clock
    job = lc.submit("alice", SPEC)
    checkpoints = plane.storage.run_dir(job.id) / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.pt").write_bytes(b"state")
    if state == "queued":
        return job.id
    if state == "cancelled":
        lc.cancel(job.id)
        return job.id
    lc.claim(job.id, "w1")
    if state == "lease_expired":
        clock.advance(LEASE_S + 1)
    elif state == "cancel_requested":
        lc.cancel(job.id)
    elif state == "succeeded":
        lc.succeed(job.id, "w1", {"steps": 1})
    elif state == "failed":
        lc.fail(job.id, "it broke", worker="w1")
    return job.id


def events(plane: ControlPlane, job_id: str) -> list[str]:
    """The webhook events recorded for the job (alice's one hook takes every kind)."""
    [hook] = plane.webhooks.list("alice")
    return [d.type for d in plane.webhooks.deliveries(hook.id, limit=500)[0] if d.job_id == job_id]


def status(plane: ControlPlane, job_id: str) -> str:
    job = plane.jobs.get(job_id)
    if job is None:
        return "deleted"
    if job.status == "running" and job.cancel_requested:
        return "cancel_requested"
    if job.status == "running" and job.lease_expires_at < plane.clock.now():
        return "lease_expired"
    return job.status


EVENTS = {
    "claim": lambda lc, j: lc.claim(j, "w2"),
    "heartbeat": lambda lc, j: lc.heartbeat(j, "w1"),
    "progress": lambda lc, j: lc.progress(j, "w1", 3, total_steps=10, rows=[{"step": 3, "loss": 1.5}]),
    "release": lambda lc, j: lc.release(j, "w1"),
    "succeed": lambda lc, j: lc.succeed(j, "w1", {"steps": 3, "scores": {"linear_top1": 0.75}},
                                        [ArtifactFile("encoder.json", 2, "ab" * 32)]),
    "fail": lambda lc, j: lc.fail(j, "out of memory", worker="w1"),
    "fail_any_holder": lambda lc, j: lc.fail(j, "its worker keeps dying"),
    "stopped": lambda lc, j: lc.stopped(j, worker="w1"),
    "cancel": lambda lc, j: lc.cancel(j),
    "requeue": lambda lc, j: lc.requeue(j),
    "resend": lambda lc, j: lc.resend(j),
    "retry": lambda lc, j: lc.retry(j),
    "delete": lambda lc, j: lc.delete(j),
    "expire_lease": lambda lc, j: lc.expire_lease(j, "w1"),
    "label": lambda lc, j: lc.label(j, "alice", name="renamed", add_tags=["t"]),
}

RUNNING = ("running", "lease_expired", "cancel_requested")
HELD = {state: state for state in RUNNING}
ALLOWED: dict[str, dict[str, str]] = {
    # event: {state it is allowed in: the state it leaves the job in}
    "claim": {"queued": "running", "lease_expired": "running"},
    "heartbeat": {"running": "running", "lease_expired": "running", "cancel_requested": "cancel_requested"},
    "progress": HELD,
    "release": {"running": "queued", "lease_expired": "queued"},
    "succeed": dict.fromkeys(RUNNING, "succeeded"),
    "fail": dict.fromkeys(RUNNING, "failed"),
    "fail_any_holder": dict.fromkeys(("queued", *RUNNING), "failed"),
    "stopped": dict.fromkeys(RUNNING, "cancelled"),
    "cancel": {"queued": "cancelled", "running": "cancel_requested", "lease_expired": "cancel_requested",
               "cancel_requested": "cancel_requested"},
    "requeue": {"lease_expired": "queued"},
    "resend": {"queued": "queued"},
    "retry": {"failed": "queued", "cancelled": "queued"},
    "delete": {"succeeded": "deleted", "failed": "deleted", "cancelled": "deleted"},
    "expire_lease": {"running": "lease_expired", "lease_expired": "lease_expired",
                     "cancel_requested": "cancel_requested"},
    "label": {state: state for state in STATES},  # not a state change: allowed in every state
}
SENDS = {"release", "requeue", "resend", "retry"}
"""Events whose side effect is one more message for the job on the broker."""
ENDED = {"succeeded": "job.succeeded", "failed": "job.failed", "cancelled": "job.cancelled"}
"""The webhook event recorded when a job reaches each state."""


def test_the_table_names_every_event_and_state():
    assert set(ALLOWED) == set(EVENTS)
    assert all(set(moves) <= set(STATES) for moves in ALLOWED.values())


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", sorted(EVENTS))
def test_event_in_state(plane, event, state):
    job_id = make(plane, state)
    assert status(plane, job_id) == state
    sent_before = messages(plane).count(job_id)
    files_before = {a.name for a in plane.artifacts.list(job_id)}
    events_before = events(plane, job_id)
    target = ALLOWED[event].get(state)
    if target is None:
        with pytest.raises(Refused) as refused:
            EVENTS[event](plane.lifecycle, job_id)
        assert str(refused.value).startswith("cannot ") and job_id in str(refused.value)
        assert status(plane, job_id) == state  # nothing moved
        assert messages(plane).count(job_id) == sent_before  # nothing sent
        assert sorted(events(plane, job_id)) == sorted(events_before)  # nothing recorded
        return
    scored_before = plane.jobs.get(job_id).score
    EVENTS[event](plane.lifecycle, job_id)
    assert status(plane, job_id) == target
    if event != "delete":
        assert plane.jobs.get(job_id).score == (0.75 if event == "succeed" else scored_before)
        labelled = plane.jobs.get(job_id)
        assert (labelled.name, labelled.tags) == (("renamed", ["t"]) if event == "label" else (None, []))
    assert messages(plane).count(job_id) == sent_before + (event in SENDS)
    ends = [ENDED[target]] if target in ENDED and target != state else []
    assert sorted(events(plane, job_id)) == sorted(events_before + ends)  # one, once
    files = {a.name for a in plane.artifacts.list(job_id)}
    if event == "succeed":
        assert files == files_before | {"encoder.json"}
    elif event == "stopped":
        assert files == files_before | {"checkpoint.pt"}
    elif event != "delete":
        assert files == files_before
    if event == "delete":
        assert not plane.storage.run_dir(job_id).exists()
        assert plane.metrics.since(job_id) == []
    else:
        assert plane.storage.run_dir(job_id).exists()


def test_submit_sends_one_message_and_a_sweep_sends_one_a_member(plane):
    job = plane.lifecycle.submit("alice", SPEC)
    assert (job.status, messages(plane).count(job.id)) == ("queued", 1)
    from dcl_core.jobs.sweep import SweepJob

    sweep = plane.lifecycle.submit("alice", SweepJob.model_validate({
        "config": SPEC.config.model_dump(mode="json"), "grid": {"method": ["dcl", "simclr"]}}))
    members = plane.jobs.children(sweep.id)
    assert sweep.status == "running" and sweep.queue is None and len(members) == 2
    sent = messages(plane)
    assert sweep.id not in sent and [sent.count(m.id) for m in members] == [1, 1]


def test_a_linear_probe_that_succeeds_scores_its_encoder_unless_the_encoder_scored_itself(plane):
    from dcl_core.jobs.linear_probe import ProbeJob

    lc = plane.lifecycle
    encoder, evaluated = make(plane, "succeeded"), make(plane, "running")
    lc.succeed(evaluated, "w1", {"scores": {"linear_top1": 0.6}})

    def probe(of: str, accuracy: float, classifier: str = "logistic") -> str:
        job = lc.submit("alice", ProbeJob.model_validate({"encoder_job": of, "train": "builtin:digits",
                                                          "test": "builtin:digits", "classifier": classifier}))
        lc.claim(job.id, "w1")
        lc.succeed(job.id, "w1", {"accuracy": accuracy, "classifier": classifier})
        assert plane.jobs.get(job.id).score == accuracy  # a probe's own score: its accuracy
        return job.id

    assert plane.jobs.get(encoder).score is None
    probe(encoder, 0.9, "knn")
    assert plane.jobs.get(encoder).score is None  # kNN is not a linear probe
    first = probe(encoder, 0.4)
    plane.clock.advance(1)
    second = probe(encoder, 0.55)
    probe(evaluated, 0.99)
    assert (plane.jobs.get(encoder).score, plane.jobs.get(evaluated).score) == (0.55, 0.6)
    lc.delete(second)
    assert plane.jobs.get(encoder).score == 0.4
    lc.delete(first)
    assert plane.jobs.get(encoder).score is None


def test_label_changes_only_the_fields_given_and_refuses_past_twenty_tags(plane):
    from dcl_core.jobs import Refusal

    lc = plane.lifecycle
    job_id = make(plane, "running")
    lc.label(job_id, name="a run", notes="why", tags=["x", "y"])
    lc.label(job_id, remove_tags=["x"], add_tags=["z"])
    job = plane.jobs.get(job_id)
    assert (job.name, job.notes, job.tags, job.status) == ("a run", "why", ["y", "z"], "running")
    with pytest.raises(Refusal, match="21 tags"):
        lc.label(job_id, add_tags=[f"t{i}" for i in range(19)])
    assert plane.jobs.get(job_id).tags == ["y", "z"]
    with pytest.raises(Refused) as refused:
        lc.label(job_id, "bob", name="mine")
    assert refused.value.missing and plane.jobs.get(job_id).name == "a run"


def test_a_second_claim_loses_and_a_second_end_is_refused(plane):
    lc = plane.lifecycle
    job_id = make(plane, "running")
    with pytest.raises(Refused, match="running"):
        lc.claim(job_id, "w2")
    lc.succeed(job_id, "w1", {"steps": 1})
    with pytest.raises(Refused, match="succeeded"):
        lc.succeed(job_id, "w1", {"steps": 2})
    assert plane.jobs.get(job_id).result == {"steps": 1}


def test_progress_rows_are_recorded_once_per_step_and_a_resumed_attempt_replaces_them(plane):
    lc, clock = plane.lifecycle, plane.clock
    job_id = make(plane, "running")
    lc.progress(job_id, "w1", 2, total_steps=4, rows=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}])
    clock.advance(LEASE_S + 1)
    lc.claim(job_id, "w2")
    lc.progress(job_id, "w2", 2, rows=[{"step": 2, "loss": 0.5}])
    rows = plane.metrics.since(job_id)
    assert [(r["step"], r["attempt"], r["loss"]) for r in rows] == [(1, 1, 2.0), (2, 2, 0.5)]
    job = plane.jobs.get(job_id)
    assert (job.step, job.total_steps, job.attempts) == (2, 4, 2)


def test_a_lease_is_kept_by_heartbeats_and_lost_without_them(plane):
    lc, clock = plane.lifecycle, plane.clock
    job_id = make(plane, "running")
    for _ in range(3):
        clock.advance(LEASE_S * 0.6)
        lc.heartbeat(job_id, "w1")
    assert plane.jobs.stale(queued_older_than_s=1e9) == []
    clock.advance(LEASE_S + 1)
    assert [j.id for j in plane.jobs.stale(queued_older_than_s=1e9)] == [job_id]
    lc.claim(job_id, "w2")
    with pytest.raises(Refused):
        lc.heartbeat(job_id, "w1")


def test_a_sweep_settles_when_its_last_member_ends_and_a_retried_member_reopens_it(plane):
    from dcl_core.jobs.sweep import SweepJob

    lc = plane.lifecycle
    sweep = lc.submit("alice", SweepJob.model_validate({
        "config": SPEC.config.model_dump(mode="json"), "grid": {"seed": [0, 1]}}))
    first, second = plane.jobs.children(sweep.id)
    with pytest.raises(Refused, match="still queued or running"):
        lc.settle(sweep.id)
    lc.claim(first.id, "w1")
    lc.succeed(first.id, "w1", {"scores": {"linear_top1": 0.5}})
    assert plane.jobs.get(sweep.id).status == "running"
    lc.claim(second.id, "w1")
    lc.fail(second.id, "diverged", worker="w1")
    settled = plane.jobs.get(sweep.id)
    assert settled.status == "succeeded"
    assert [r["status"] for r in settled.result["rows"]] == ["succeeded", "failed"]
    assert json.loads((plane.storage.run_dir(sweep.id) / "results.json").read_text()) == settled.result
    assert {a.name for a in plane.artifacts.list(sweep.id)} == {"results.json", "results.csv"}
    with pytest.raises(Refused):
        lc.settle(sweep.id)  # once
    lc.retry(sweep.id)
    assert plane.jobs.get(sweep.id).status == "running"
    assert plane.jobs.get(second.id).status == "queued"
    with pytest.raises(Refused):
        lc.delete(sweep.id)


def test_cancelling_a_sweep_cancels_queued_members_and_settles_it_cancelled(plane):
    from dcl_core.jobs.sweep import SweepJob

    lc = plane.lifecycle
    sweep = lc.submit("alice", SweepJob.model_validate({
        "config": SPEC.config.model_dump(mode="json"), "grid": {"seed": [0, 1]}}))
    first, second = plane.jobs.children(sweep.id)
    lc.claim(first.id, "w1")
    lc.cancel(sweep.id)
    assert plane.jobs.get(second.id).status == "cancelled"
    assert plane.jobs.get(first.id).cancel_requested
    assert plane.jobs.get(sweep.id).status == "running"
    lc.stopped(first.id, worker="w1")
    assert plane.jobs.get(sweep.id).status == "cancelled"
    deleted = lc.delete(sweep.id)
    assert set(deleted) == {sweep.id, first.id, second.id}
    assert all(plane.jobs.get(i) is None for i in deleted)


def test_another_owner_cannot_cancel_retry_or_delete(plane):
    lc = plane.lifecycle
    job_id = make(plane, "failed")
    for event in (lc.cancel, lc.retry, lc.delete):
        with pytest.raises(Refused) as refused:
            event(job_id, "bob")
        assert refused.value.missing
    assert status(plane, job_id) == "failed"


def test_nothing_but_transitions_writes_a_jobs_status():
    """The lifecycle owns a job's state: no other module sets `status` on the jobs table."""
    import ast

    root = Path(__file__).resolve().parents[2]
    allowed = {root / "service" / "control" / "transitions.py"}
    offenders = []
    for path in sorted((root / "service").rglob("*.py")) + sorted((root / "worker").rglob("*.py")):
        if path in allowed or "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
                if any(k.arg == "status" for k in node.keywords):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("insert", "update") and \
                    node.args and getattr(node.args[0], "id", None) == "jobs":
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
    importers = [p.relative_to(root) for p in sorted(root.joinpath("service").rglob("*.py"))
                 + sorted(root.joinpath("worker").rglob("*.py")) + sorted(root.joinpath("tests").rglob("*.py"))
                 if p.name not in ("transitions.py", "lifecycle.py", "test_lifecycle.py")
                 and ("import transitions" in p.read_text() or "control.transitions" in p.read_text())]
    assert importers == []


def test_a_cancelled_sweep_records_an_event_for_each_queued_member_and_itself(plane):
    from dcl_core.jobs.sweep import SweepJob

    lc = plane.lifecycle
    sweep = lc.submit("alice", SweepJob.model_validate({
        "config": SPEC.config.model_dump(mode="json"), "grid": {"seed": [0, 1]}}))
    first, second = plane.jobs.children(sweep.id)
    lc.claim(first.id, "w1")
    lc.cancel(sweep.id)
    assert (events(plane, first.id), events(plane, second.id), events(plane, sweep.id)) == ([], ["job.cancelled"], [])
    lc.stopped(first.id, worker="w1")
    assert (events(plane, first.id), events(plane, sweep.id)) == (["job.cancelled"], ["job.cancelled"])
    with pytest.raises(Refused):
        lc.settle(sweep.id)
    assert events(plane, sweep.id) == ["job.cancelled"]  # once


def test_a_job_a_model_version_points_at_is_not_deleted(plane):
    job_id = make(plane, "succeeded")
    plane.registry.register("alice", "digits", job_id)
    with pytest.raises(Refused, match="it is version 1 of model digits") as refused:
        plane.lifecycle.delete(job_id)
    assert not refused.value.missing and status(plane, job_id) == "succeeded"
    assert plane.storage.run_dir(job_id).exists() and plane.artifacts.list(job_id) == []
    plane.registry.delete_version("alice", "digits", 1)
    assert plane.lifecycle.delete(job_id) == [job_id]
