"""The task body: claim, run the engine with store-backed hooks, record the outcome."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import pytest
from sqlalchemy import update

from service.store import jobs, utcnow
from tests.worker.conftest import (
    TINY_CONFIG,
    JobThread,
    long_config,
    make_settings,
    pretrain_spec,
    wait_until,
)
from tests.fixtures.volumes import FailingWrites, tmpfs
from worker import engine
from worker.tasks import disk_message, execute_job, list_artifacts, publish_checkpoint, runtime_limit_s

pytestmark = pytest.mark.slow


def run(job_id, store, settings, worker="w1") -> str:
    return execute_job(job_id, store=store, settings=settings, worker=worker)


@pytest.fixture
def pretrained(store, settings) -> dict:
    job = store.create_job("me", "pretrain", pretrain_spec())
    assert run(job["id"], store, settings) == "succeeded"
    return store.get_job(job["id"])


def test_pretrain_job_succeeds_with_metrics_and_checksummed_artifacts(store, settings, pretrained):
    job = pretrained
    assert job["status"] == "succeeded" and job["error"] is None
    assert job["attempts"] == 1
    assert job["step"] == job["total_steps"] == 3
    assert job["result"]["steps"] == 3
    assert "loss" in job["result"]["final_metrics"]
    assert job["latest_metrics"]["step"] == 3

    rows = store.metrics(job["id"])
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all({"loss", "lr", "epoch"} <= set(r) for r in rows)

    run_dir = settings.artifacts_dir / job["id"]
    recorded = {a["name"]: a for a in store.artifacts(job["id"])}
    assert {name for name in recorded if not name.startswith("tensorboard/")} == {
        "encoder.safetensors", "encoder.json", "metrics.jsonl"}
    assert [name for name in recorded if name.startswith("tensorboard/events.out.tfevents.")]
    for name, artifact in recorded.items():
        data = (run_dir / name).read_bytes()
        assert artifact["size"] == len(data)
        assert artifact["sha256"] == hashlib.sha256(data).hexdigest()
    assert (run_dir / "checkpoints" / "last.pt").is_file()  # kept, but not an artifact


def test_linear_probe_and_embed_jobs_use_the_pretrained_encoder(store, settings, pretrained):
    probe = store.create_job("me", "linear_probe", {
        "type": "linear_probe", "encoder_job": pretrained["id"], "device": "cpu", "epochs": 20,
        "train": {"source": "builtin:digits", "max_images": 100},
        "test": {"source": "builtin:digits", "split": "test", "max_images": 50},
    })
    assert run(probe["id"], store, settings) == "succeeded"
    done = store.get_job(probe["id"])
    assert 0.0 <= done["result"]["accuracy"] <= 1.0
    assert done["result"]["num_test"] == 50
    written = json.loads((settings.artifacts_dir / probe["id"] / "probe.json").read_text())
    assert written["accuracy"] == pytest.approx(done["result"]["accuracy"])
    assert [a["name"] for a in store.artifacts(probe["id"])] == ["probe.json"]

    embed = store.create_job("me", "embed", {
        "type": "embed", "encoder_job": pretrained["id"], "device": "cpu",
        "data": {"source": "builtin:digits", "max_images": 20},
    })
    assert run(embed["id"], store, settings) == "succeeded"
    done = store.get_job(embed["id"])
    assert done["result"]["shape"][0] == 20
    assert {"embeddings.npy", "embeddings_labels.npy"} == {a["name"] for a in store.artifacts(embed["id"])}


def test_a_second_delivery_of_a_finished_job_does_nothing(store, settings, pretrained):
    before = store.metrics(pretrained["id"])
    assert run(pretrained["id"], store, settings, worker="w2") == "skipped"
    after = store.get_job(pretrained["id"])
    assert after["attempts"] == 1 and after["worker"] == "w1"
    assert after["finished_at"] == pretrained["finished_at"]
    assert store.metrics(pretrained["id"]) == before


def test_a_delivery_while_another_worker_holds_the_lease_does_nothing(store, settings):
    job = store.create_job("me", "pretrain", pretrain_spec())
    assert store.claim(job["id"], "other", lease_s=60) is not None
    assert run(job["id"], store, settings) == "skipped"
    held = store.get_job(job["id"])
    assert held["status"] == "running" and held["worker"] == "other" and held["attempts"] == 1
    assert store.metrics(job["id"]) == []


def test_a_user_error_fails_the_job_with_its_message(store, settings):
    config = {**TINY_CONFIG, "batch_size": 64}  # more than the 48 images
    job = store.create_job("me", "pretrain", pretrain_spec(config))
    assert run(job["id"], store, settings) == "failed"
    failed = store.get_job(job["id"])
    assert failed["status"] == "failed"
    assert "fewer than batch_size 64" in failed["error"]
    assert "see worker log" not in failed["error"]


def test_a_probe_of_a_missing_encoder_fails_with_a_user_message(store, settings):
    job = store.create_job("me", "linear_probe", {
        "type": "linear_probe", "encoder_job": "job_0000000000000000", "device": "cpu",
        "train": "builtin:digits", "test": {"source": "builtin:digits", "split": "test"},
    })
    assert run(job["id"], store, settings) == "failed"
    assert "job_0000000000000000" in store.get_job(job["id"])["error"]


def test_an_unexpected_error_fails_the_job_with_its_class_and_a_log_pointer(store, settings, monkeypatch):
    def broken(spec, run_dir, env, hooks, settings):
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(engine.RUNNERS, "pretrain", broken)
    job = store.create_job("me", "pretrain", pretrain_spec())
    assert run(job["id"], store, settings) == "failed"
    assert store.get_job(job["id"])["error"] == "RuntimeError: disk on fire (see worker log)"


def test_a_full_artifact_volume_fails_the_job_and_never_leaves_a_truncated_encoder(store, settings, monkeypatch):
    """The real task, engine and store; only the final rename of encoder.safetensors fails, the
    way a write(2) on a full disk does (ENOSPC, no file name)."""
    real_replace = os.replace

    def full_disk(src, dst, *args, **kwargs):
        if os.fspath(dst).endswith("encoder.safetensors"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full_disk)
    job = store.create_job("me", "pretrain", pretrain_spec())
    assert run(job["id"], store, settings) == "failed"

    error = store.get_job(job["id"])["error"]
    run_dir = settings.artifacts_dir / job["id"]
    assert error.startswith(f"no space left on the artifact volume (DCL_ARTIFACTS_DIR={settings.artifacts_dir})")
    assert f"while writing {run_dir / 'encoder.safetensors'}" in error
    assert "free space there and resubmit the job" in error
    assert store.artifacts(job["id"]) == []
    assert not (run_dir / "encoder.safetensors").exists()
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no half-written temporary


def test_a_checkpoint_that_fills_the_volume_fails_the_job_with_the_disk_full_message(tmp_path, monkeypatch):
    """Issue 9, bug 8: torch.save turned ENOSPC into RuntimeError("... unexpected pos"). The
    artifact volume is a real 256 KiB tmpfs where the machine allows a mount; elsewhere the
    checkpoint's writes fail with ENOSPC at the OS call."""
    from service.store import JobStore

    with tmpfs(tmp_path / "artifacts", 256 * 1024) as volume:
        if volume is None:
            real_fdopen = os.fdopen

            def fdopen(fd, *args, **kwargs):
                handle = real_fdopen(fd, *args, **kwargs)
                return FailingWrites(handle) if "last.pt" in os.readlink(f"/proc/self/fd/{fd}") else handle

            monkeypatch.setattr(os, "fdopen", fdopen)
        settings = make_settings(tmp_path / "data", artifacts_dir=tmp_path / "artifacts")
        store = JobStore(settings.database_url)
        config = {**TINY_CONFIG, "checkpoint_every_steps": 1}  # ~3 MB of state
        job = store.create_job("me", "pretrain", pretrain_spec(config))
        assert run(job["id"], store, settings) == "failed"
        error = store.get_job(job["id"])["error"]
        assert error.startswith("no space left on the artifact volume (DCL_ARTIFACTS_DIR="), error
        assert "last.pt" in error and "free space there and resubmit the job" in error
        store.dispose()


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


def test_a_cancel_request_stops_a_running_job_within_a_step(store, settings):
    job = store.create_job("me", "pretrain", pretrain_spec(long_config()))
    thread = JobThread(job["id"], store, settings)
    thread.start()
    wait_until(lambda: store.get_job(job["id"])["step"] >= 2, what="two steps")
    assert store.cancel(job["id"], "me")["cancel_requested"] is True
    assert thread.result(30) == "cancelled"
    cancelled = store.get_job(job["id"])
    assert cancelled["status"] == "cancelled"
    assert cancelled["step"] < cancelled["total_steps"]
    run_dir = settings.artifacts_dir / job["id"]
    assert not (run_dir / "encoder.safetensors").exists()
    # Its last checkpoint is listed, with the sha256 of the bytes the API would serve.
    last = (run_dir / "checkpoints" / "last.pt").read_bytes()
    [artifact] = store.artifacts(job["id"])
    assert (artifact["name"], artifact["size"], artifact["sha256"]) == (
        "checkpoint.pt", len(last), hashlib.sha256(last).hexdigest())
    assert (run_dir / "checkpoint.pt").read_bytes() == last


def test_the_server_run_time_cap_fails_the_job_with_that_reason(tmp_path):
    from service.store import JobStore

    settings = make_settings(tmp_path / "capped", max_job_runtime_s=1.0)
    store = JobStore(settings.database_url)
    job = store.create_job("me", "pretrain", pretrain_spec(long_config()))
    assert run(job["id"], store, settings) == "failed"
    error = store.get_job(job["id"])["error"]
    assert "maximum run time of 1 s" in error and "DCL_MAX_JOB_RUNTIME_S" in error
    assert [a["name"] for a in store.artifacts(job["id"])] == ["checkpoint.pt"]  # "its last checkpoint is kept"


def test_the_job_run_time_limit_fails_the_job_with_that_reason(store, settings):
    job = store.create_job("me", "pretrain", pretrain_spec(long_config(max_runtime_s=1.0)))
    assert run(job["id"], store, settings) == "failed"
    assert "max_runtime_s" in store.get_job(job["id"])["error"]


def test_runtime_limit_is_the_tighter_of_server_cap_and_job_config(tmp_path):
    job = {"spec": {"config": {"max_runtime_s": 50}}}
    assert runtime_limit_s(job, make_settings(tmp_path, max_job_runtime_s=100)) == 50
    assert runtime_limit_s(job, make_settings(tmp_path, max_job_runtime_s=20)) == 20
    assert runtime_limit_s({"spec": {}}, make_settings(tmp_path)) is None


def test_a_worker_that_lost_its_lease_stops_and_the_next_one_resumes_from_the_checkpoint(store, settings):
    """The reconciler's path: w1 stops heart-beating in time (here: its lease is expired by
    hand), the job is requeued, w1 notices and stops; w2 resumes from the checkpoint."""
    job = store.create_job("me", "pretrain", pretrain_spec(long_config(epochs=3, checkpoint_every_steps=2)))
    first = JobThread(job["id"], store, settings, worker="w1")
    first.start()
    wait_until(lambda: store.get_job(job["id"])["step"] >= 4, what="four steps")
    # What store.requeue does to a job whose lease expired (in one statement here: w1's
    # heartbeat would otherwise renew the lease in between).
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job["id"])
                     .values(status="queued", worker=None, lease_expires_at=None, enqueued_at=utcnow()))
    assert first.result(30) == "lost"
    assert store.get_job(job["id"])["status"] == "queued"  # w1 wrote nothing after losing it

    reported = max(r["step"] for r in store.metrics(job["id"]))
    checkpoint_step = reported - reported % 2  # checkpoint_every_steps=2; none past the last report
    assert run(job["id"], store, settings, worker="w2") == "succeeded"

    done = store.get_job(job["id"])
    assert done["attempts"] == 2 and done["worker"] == "w2"
    rows = store.metrics(job["id"])
    steps = [r["step"] for r in rows]
    assert steps == list(range(1, done["total_steps"] + 1))  # none missing, none twice
    resumed = [r["step"] for r in rows if r["attempt"] == 2]
    assert resumed[0] == checkpoint_step + 1  # not from step 1
    assert resumed == list(range(checkpoint_step + 1, done["total_steps"] + 1))


def test_publish_checkpoint_serves_last_pt_by_a_plain_name_in_the_run_dir(tmp_path):
    assert publish_checkpoint(tmp_path) == []  # no checkpoint written yet
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"state")
    assert publish_checkpoint(tmp_path) == [("checkpoint.pt", 5, hashlib.sha256(b"state").hexdigest())]
    assert list_artifacts(tmp_path) == publish_checkpoint(tmp_path)  # listed like any top-level file


def test_list_artifacts_skips_folders_and_hidden_temporaries(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    (tmp_path / ".encoder.safetensors.tmp").write_bytes(b"half")
    (tmp_path / "encoder.json").write_text("{}")
    assert list_artifacts(tmp_path) == [("encoder.json", 2, hashlib.sha256(b"{}").hexdigest())]


def _probe_spec(encoder_job: str) -> dict:
    return {
        "type": "linear_probe", "encoder_job": encoder_job, "device": "cpu", "epochs": 20,
        "train": {"source": "builtin:digits", "max_images": 100},
        "test": {"source": "builtin:digits", "split": "test", "max_images": 50},
    }


@pytest.mark.parametrize("job_type", ["linear_probe", "embed"])
def test_a_probe_or_embed_cancelled_while_running_ends_cancelled(store, settings, pretrained, monkeypatch, job_type):
    # Issue 9, item 11: probe and embed never polled should_stop; a cancelled probe could end `succeeded`.
    spec = _probe_spec(pretrained["id"]) if job_type == "linear_probe" else {
        "type": "embed", "encoder_job": pretrained["id"], "device": "cpu", "data": {"source": "builtin:digits"}}
    job = store.create_job("me", job_type, spec)
    claim = store.claim

    def claim_then_cancel(*args, **kwargs):  # the user cancels the moment the job is running
        claimed = claim(*args, **kwargs)
        assert store.cancel(job["id"], "me")["cancel_requested"] is True
        return claimed

    monkeypatch.setattr(store, "claim", claim_then_cancel)
    assert run(job["id"], store, settings) == "cancelled"
    done = store.get_job(job["id"])
    assert done["status"] == "cancelled" and done["result"] is None
    assert store.artifacts(job["id"]) == []


def test_a_probe_past_its_run_time_cap_fails_with_that_reason(tmp_path, pretrained, settings):
    from service.store import JobStore

    capped = make_settings(settings.data_dir, max_job_runtime_s=1e-6)
    store = JobStore(capped.database_url)
    job = store.create_job("me", "linear_probe", _probe_spec(pretrained["id"]))
    assert run(job["id"], store, capped) == "failed"
    assert "maximum run time" in store.get_job(job["id"])["error"]
