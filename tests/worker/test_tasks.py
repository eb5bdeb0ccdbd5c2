"""The task body: claim, run the engine with lifecycle-backed hooks, record the outcome."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import pytest
from sqlalchemy import update

from service.control.clock import utcnow
from service.control.models import ArtifactFile, Job
from service.control.storage import LocalStorage
from service.control.tables import jobs
from tests.fixtures.control import open_plane, submit
from tests.fixtures.volumes import FailingWrites, tmpfs
from tests.worker.conftest import (
    TINY_CONFIG,
    JobThread,
    long_config,
    make_settings,
    pretrain_spec,
)
from tests.fixtures.waiting import wait_until
from worker.runners import RUNNERS
from worker.tasks import disk_message, execute_job, runtime_limit_s

pytestmark = pytest.mark.slow


def run(job_id, plane, worker="w1") -> str:
    return execute_job(job_id, plane=plane, worker=worker)


@pytest.fixture
def pretrained(plane) -> Job:
    job = submit(plane, "me", pretrain_spec())
    assert run(job.id, plane) == "succeeded"
    return plane.jobs.get(job.id)


def test_pretrain_job_succeeds_with_metrics_and_checksummed_artifacts(plane, settings, pretrained):
    job = pretrained
    assert job.status == "succeeded" and job.error is None
    assert job.attempts == 1
    assert job.step == job.total_steps == 3
    assert job.result["steps"] == 3
    assert "loss" in job.result["final_metrics"]
    assert job.latest_metrics["step"] == 3

    rows = plane.metrics.since(job.id)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all({"loss", "lr", "epoch"} <= set(r) for r in rows)

    run_dir = settings.artifacts_dir / job.id
    assert plane.storage.run_dir(job.id) == run_dir
    recorded = {a.name: a for a in plane.artifacts.list(job.id)}
    assert {name for name in recorded if not name.startswith("tensorboard/")} == {
        "encoder.safetensors", "encoder.json", "metrics.jsonl"}
    assert [name for name in recorded if name.startswith("tensorboard/events.out.tfevents.")]
    for name, artifact in recorded.items():
        data = (run_dir / name).read_bytes()
        assert artifact.size == len(data)
        assert artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert (run_dir / "checkpoints" / "last.pt").is_file()  # kept, but not an artifact


def test_linear_probe_and_embed_jobs_use_the_pretrained_encoder(plane, settings, pretrained):
    probe = submit(plane, "me", {
        "type": "linear_probe", "encoder_job": pretrained.id, "device": "cpu", "epochs": 20,
        "train": {"source": "builtin:digits", "max_images": 100},
        "test": {"source": "builtin:digits", "split": "test", "max_images": 50},
    })
    assert run(probe.id, plane) == "succeeded"
    done = plane.jobs.get(probe.id)
    assert 0.0 <= done.result["accuracy"] <= 1.0
    assert done.result["num_test"] == 50
    written = json.loads((settings.artifacts_dir / probe.id / "probe.json").read_text())
    assert written["accuracy"] == pytest.approx(done.result["accuracy"])
    assert [a.name for a in plane.artifacts.list(probe.id)] == ["probe.json"]

    embed = submit(plane, "me", {
        "type": "embed", "encoder_job": pretrained.id, "device": "cpu",
        "data": {"source": "builtin:digits", "max_images": 20},
    })
    assert run(embed.id, plane) == "succeeded"
    done = plane.jobs.get(embed.id)
    assert done.result["shape"][0] == 20
    names = {a.name for a in plane.artifacts.list(embed.id)}
    assert {"embeddings.npy", "embeddings_labels.npy", "index.npy", "index.json", "map.npy"} <= names
    assert done.result["index"]["kind"] == "exact" and "recall_at_1" in done.result["scores"]


def test_a_second_delivery_of_a_finished_job_does_nothing(plane, pretrained):
    before = plane.metrics.since(pretrained.id)
    assert run(pretrained.id, plane, worker="w2") == "skipped"
    after = plane.jobs.get(pretrained.id)
    assert after.attempts == 1 and after.worker == "w1"
    assert after.finished_at == pretrained.finished_at
    assert plane.metrics.since(pretrained.id) == before


def test_a_delivery_while_another_worker_holds_the_lease_does_nothing(plane):
    job = submit(plane, "me", pretrain_spec())
    plane.lifecycle.claim(job.id, "other")
    assert run(job.id, plane) == "skipped"
    held = plane.jobs.get(job.id)
    assert held.status == "running" and held.worker == "other" and held.attempts == 1
    assert plane.metrics.since(job.id) == []


def test_a_user_error_fails_the_job_with_its_message(plane):
    config = {**TINY_CONFIG, "batch_size": 64}  # more than the 48 images
    job = submit(plane, "me", pretrain_spec(config))
    assert run(job.id, plane) == "failed"
    failed = plane.jobs.get(job.id)
    assert failed.status == "failed"
    assert "fewer than batch_size 64" in failed.error
    assert "see worker log" not in failed.error


def test_a_probe_of_a_missing_encoder_fails_with_a_user_message(plane):
    job = submit(plane, "me", {
        "type": "linear_probe", "encoder_job": "job_0000000000000000", "device": "cpu",
        "train": "builtin:digits", "test": {"source": "builtin:digits", "split": "test"},
    })
    assert run(job.id, plane) == "failed"
    assert "job_0000000000000000" in plane.jobs.get(job.id).error


def test_an_unexpected_error_fails_the_job_with_its_class_and_a_log_pointer(plane, monkeypatch):
    def broken(spec, run):
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(RUNNERS, "pretrain", broken)
    job = submit(plane, "me", pretrain_spec())
    assert run(job.id, plane) == "failed"
    assert plane.jobs.get(job.id).error == "RuntimeError: disk on fire (see worker log)"


def test_a_full_artifact_volume_fails_the_job_and_never_leaves_a_truncated_encoder(plane, settings, monkeypatch):
    """The real task, engine and store; only the final rename of encoder.safetensors fails, the
    way a write(2) on a full disk does (ENOSPC, no file name)."""
    real_replace = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if os.fspath(dst).endswith("encoder.safetensors"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    job = submit(plane, "me", pretrain_spec())
    assert run(job.id, plane) == "failed"

    error = plane.jobs.get(job.id).error
    run_dir = settings.artifacts_dir / job.id
    assert error.startswith(f"no space left on the artifact volume (DCL_ARTIFACTS_DIR={settings.artifacts_dir})")
    assert f"while writing {run_dir / 'encoder.safetensors'}" in error
    assert "free space there and resubmit the job" in error
    assert plane.artifacts.list(job.id) == []
    assert not (run_dir / "encoder.safetensors").exists()
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no half-written temporary


def test_a_checkpoint_that_fills_the_volume_fails_the_job_with_the_disk_full_message(tmp_path, monkeypatch):
    """Issue 9, bug 8: torch.save turned ENOSPC into RuntimeError("... unexpected pos"). The
    artifact volume is a real 256 KiB tmpfs where the machine allows a mount; elsewhere the
    checkpoint's writes fail with ENOSPC at the OS call."""
    with tmpfs(tmp_path / "artifacts", 256 * 1024) as volume:
        if volume is None:
            real_fdopen = os.fdopen

            def fdopen(fd, *args, **kwargs):
                handle = real_fdopen(fd, *args, **kwargs)
                return FailingWrites(handle) if "last.pt" in os.readlink(f"/proc/self/fd/{fd}") else handle

            monkeypatch.setattr(os, "fdopen", fdopen)
        settings = make_settings(tmp_path / "data", artifacts_dir=tmp_path / "artifacts")
        with open_plane(settings) as plane:
            config = {**TINY_CONFIG, "checkpoint_every_steps": 1}  # ~3 MB of state
            job = submit(plane, "me", pretrain_spec(config))
            assert run(job.id, plane) == "failed"
            error = plane.jobs.get(job.id).error
        assert error.startswith("no space left on the artifact volume (DCL_ARTIFACTS_DIR="), error
        assert "last.pt" in error and "free space there and resubmit the job" in error


@pytest.mark.parametrize("code, start, fix", [
    (errno.EDQUOT, "disk quota exceeded on the cache volume", "raise the quota"),
    (errno.EROFS, "cannot write to the read-only cache volume", "mount it read-write"),
])
def test_disk_errors_name_the_volume_by_its_setting_and_say_what_to_do(tmp_path, code, start, fix):
    settings = make_settings(tmp_path / "data")
    written = settings.cache_dir / "digits.npz"
    message = disk_message(OSError(code, os.strerror(code), str(written)), settings)
    assert message.startswith(f"{start} (DCL_CACHE_DIR={settings.cache_dir}) while writing {written}: ")
    assert fix in message
    # No file name (a failed write): the artifact volume, where jobs write; other errors: not a disk problem.
    assert disk_message(OSError(errno.ENOSPC, "full"), settings).startswith(
        f"no space left on the artifact volume (DCL_ARTIFACTS_DIR={settings.artifacts_dir}): ")
    assert disk_message(OSError(errno.EACCES, "denied", str(written)), settings) is None


def test_a_cancel_request_stops_a_running_job_within_a_step(plane, settings):
    job = submit(plane, "me", pretrain_spec(long_config()))
    thread = JobThread(job.id, plane)
    thread.start()
    wait_until(lambda: plane.jobs.get(job.id).step >= 2, what="two steps")
    assert plane.lifecycle.cancel(job.id, "me").cancel_requested is True
    assert thread.result(30) == "cancelled"
    cancelled = plane.jobs.get(job.id)
    assert cancelled.status == "cancelled"
    assert cancelled.step < cancelled.total_steps
    run_dir = settings.artifacts_dir / job.id
    assert not (run_dir / "encoder.safetensors").exists()
    # Its last checkpoint is listed, with the sha256 of the bytes the API would serve.
    last = (run_dir / "checkpoints" / "last.pt").read_bytes()
    [artifact] = plane.artifacts.list(job.id)
    assert (artifact.name, artifact.size, artifact.sha256) == (
        "checkpoint.pt", len(last), hashlib.sha256(last).hexdigest())
    assert (run_dir / "checkpoint.pt").read_bytes() == last


def test_the_server_run_time_cap_fails_the_job_with_that_reason(tmp_path):
    settings = make_settings(tmp_path / "capped", max_job_runtime_s=1.0)
    with open_plane(settings) as plane:
        job = submit(plane, "me", pretrain_spec(long_config()))
        assert run(job.id, plane) == "failed"
        error = plane.jobs.get(job.id).error
        assert "maximum run time of 1 s" in error and "DCL_MAX_JOB_RUNTIME_S" in error
        assert [a.name for a in plane.artifacts.list(job.id)] == ["checkpoint.pt"]  # "its last checkpoint is kept"


def test_the_job_run_time_limit_fails_the_job_with_that_reason(plane):
    job = submit(plane, "me", pretrain_spec(long_config(max_runtime_s=1.0)))
    assert run(job.id, plane) == "failed"
    assert "max_runtime_s" in plane.jobs.get(job.id).error


def test_runtime_limit_is_the_tighter_of_server_cap_and_job_config(tmp_path):
    def job(spec: dict) -> Job:
        return Job(id="job_0123456789abcdef", owner="me", type="pretrain", status="queued", spec_data=spec)

    capped = job({"config": {"max_runtime_s": 50}})
    assert runtime_limit_s(capped, make_settings(tmp_path, max_job_runtime_s=100)) == 50
    assert runtime_limit_s(capped, make_settings(tmp_path, max_job_runtime_s=20)) == 20
    assert runtime_limit_s(job({}), make_settings(tmp_path)) is None


def test_a_worker_that_lost_its_lease_stops_and_the_next_one_resumes_from_the_checkpoint(plane):
    """The reconciler's path: w1 stops heart-beating in time (here: its lease is expired by
    hand), the job is requeued, w1 notices and stops; w2 resumes from the checkpoint."""
    job = submit(plane, "me", pretrain_spec(long_config(epochs=3, checkpoint_every_steps=2)))
    first = JobThread(job.id, plane, worker="w1")
    first.start()
    wait_until(lambda: plane.jobs.get(job.id).step >= 4, what="four steps")
    # What lifecycle.requeue does to a job whose lease expired (in one statement here: w1's
    # heartbeat would otherwise renew the lease between expire_lease and requeue).
    with plane.db.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job.id)
                     .values(status="queued", worker=None, lease_expires_at=None, enqueued_at=utcnow()))
    assert first.result(30) == "lost"
    assert plane.jobs.get(job.id).status == "queued"  # w1 wrote nothing after losing it

    reported = max(r["step"] for r in plane.metrics.since(job.id))
    checkpoint_step = reported - reported % 2  # checkpoint_every_steps=2; none past the last report
    assert run(job.id, plane, worker="w2") == "succeeded"

    done = plane.jobs.get(job.id)
    assert done.attempts == 2 and done.worker == "w2"
    rows = plane.metrics.since(job.id)
    steps = [r["step"] for r in rows]
    assert steps == list(range(1, done.total_steps + 1))  # none missing, none twice
    resumed = [r["step"] for r in rows if r["attempt"] == 2]
    assert resumed[0] == checkpoint_step + 1  # not from step 1
    assert resumed == list(range(checkpoint_step + 1, done.total_steps + 1))


def test_publish_checkpoint_serves_last_pt_by_a_plain_name_in_the_run_dir(tmp_path):
    storage = LocalStorage(tmp_path / "artifacts", tmp_path / "datasets")
    job_id = "job_0123456789abcdef"
    run_dir = storage.run_dir(job_id)
    assert storage.publish_checkpoint(job_id) == []  # no checkpoint written yet
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"state")
    published = storage.publish_checkpoint(job_id)
    assert published == [ArtifactFile("checkpoint.pt", 5, hashlib.sha256(b"state").hexdigest())]
    assert (run_dir / "checkpoint.pt").read_bytes() == b"state"
    assert storage.job_files(job_id) == storage.publish_checkpoint(job_id)  # listed like any top-level file


def test_job_files_skip_folders_and_hidden_temporaries(tmp_path):
    storage = LocalStorage(tmp_path / "artifacts", tmp_path / "datasets")
    job_id = "job_0123456789abcdef"
    run_dir = storage.run_dir(job_id)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
    (run_dir / ".encoder.safetensors.tmp").write_bytes(b"half")
    (run_dir / "encoder.json").write_text("{}")
    assert storage.job_files(job_id) == [ArtifactFile("encoder.json", 2, hashlib.sha256(b"{}").hexdigest())]


def _probe_spec(encoder_job: str) -> dict:
    return {
        "type": "linear_probe", "encoder_job": encoder_job, "device": "cpu", "epochs": 20,
        "train": {"source": "builtin:digits", "max_images": 100},
        "test": {"source": "builtin:digits", "split": "test", "max_images": 50},
    }


@pytest.mark.parametrize("job_type", ["linear_probe", "embed"])
def test_a_probe_or_embed_cancelled_while_running_ends_cancelled(plane, pretrained, monkeypatch, job_type):
    # Issue 9, item 11: probe and embed never polled should_stop; a cancelled probe could end `succeeded`.
    spec = _probe_spec(pretrained.id) if job_type == "linear_probe" else {
        "type": "embed", "encoder_job": pretrained.id, "device": "cpu", "data": {"source": "builtin:digits"}}
    job = submit(plane, "me", spec)
    claim = plane.lifecycle.claim

    def claim_then_cancel(*args, **kwargs):  # the user cancels the moment the job is running
        claimed = claim(*args, **kwargs)
        assert plane.lifecycle.cancel(job.id, "me").cancel_requested is True
        return claimed

    monkeypatch.setattr(plane.lifecycle, "claim", claim_then_cancel)
    assert run(job.id, plane) == "cancelled"
    done = plane.jobs.get(job.id)
    assert done.status == "cancelled" and done.result is None
    assert plane.artifacts.list(job.id) == []


def test_a_probe_past_its_run_time_cap_fails_with_that_reason(pretrained, settings):
    capped = make_settings(settings.data_dir, max_job_runtime_s=1e-6)
    with open_plane(capped) as plane:
        job = submit(plane, "me", _probe_spec(pretrained.id))
        assert run(job.id, plane) == "failed"
        assert "maximum run time" in plane.jobs.get(job.id).error
