"""Faults survived, with real processes killed for real (issue 4):

- a worker SIGKILLed during epoch 2 of 3 (the whole worker, or only the pool child that
  trains): the job is taken up again after its lease expires and resumes from its last
  checkpoint; the metrics series has every step once; the record counts two attempts;
- Redis restarted (without persistence) while one job runs and another waits: the
  reconciler sends the lost message again and both jobs end `succeeded`.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.helpers import service_stack, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(240)]

STEPS_PER_EPOCH = 100
RESUMABLE = {
    "encoder": "convnet_small",
    "dataset": {"source": "builtin:digits", "image_size": 16, "max_images": 800},
    # 800 // 8 = 100 short steps an epoch: epoch 2 lasts seconds, so the test polling every
    # 0.2 s finds the job inside it whatever the machine's speed.
    "batch_size": 8,
    "epochs": 3,
    "lr": 0.05,
    "device": "cpu",
    "log_every_steps": 1,
    "checkpoint_every_steps": 1000,  # only at epoch ends: a resume is plainly from step 10 or 20
}


@pytest.fixture(scope="module")
def sqlite_stack(tmp_path_factory):
    with service_stack("sqlite", tmp_path_factory.mktemp("faults")) as services:
        yield services
        print(services.logs())


def in_epoch_two(job: dict) -> bool:
    return STEPS_PER_EPOCH + 1 < job["progress"]["step"] < 2 * STEPS_PER_EPOCH - 2


def assert_resumed_from_epoch_one_checkpoint(client, job_id: str) -> dict:
    done = wait_job(client, job_id, timeout_s=120)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    rows = client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]
    total = 3 * STEPS_PER_EPOCH
    assert [r["step"] for r in rows] == list(range(1, total + 1))  # none missing, none twice
    second = [r["step"] for r in rows if r["attempt"] == 2]
    # Resumed from the checkpoint at the end of epoch 1 (step 100), not from step 0; the
    # steps the dead worker had done past it were recomputed and replaced.
    assert second == list(range(STEPS_PER_EPOCH + 1, total + 1))
    assert {r["attempt"] for r in rows if r["step"] <= STEPS_PER_EPOCH} == {1}
    # The final encoder is whole: its checksum matches what the download serves.
    artifacts = {a["name"]: a for a in client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]}
    weights = client.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors")
    assert weights.status_code == 200
    import hashlib

    assert hashlib.sha256(weights.content).hexdigest() == artifacts["encoder.safetensors"]["sha256"]
    return done


def test_worker_killed_mid_training_resumes_from_its_checkpoint(sqlite_stack):
    stack = sqlite_stack
    with stack.client() as client:
        job = client.post("/v1/jobs", json={"type": "pretrain", "config": RESUMABLE}).json()
        wait_job(client, job["id"], ("running",), until=in_epoch_two, timeout_s=120)
        stack.worker.kill()  # main process and the child that trains, at once
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"  # nobody knows yet

        stack.start_worker()  # its reconciler requeues the job once the dead one's lease runs out
        assert_resumed_from_epoch_one_checkpoint(client, job["id"])
    assert "attempt 2" in stack.worker.output(10**7)


def test_pool_child_killed_mid_training_is_taken_up_by_the_same_worker(sqlite_stack):
    stack = sqlite_stack
    with stack.client() as client:
        job = client.post("/v1/jobs", json={"type": "pretrain", "config": RESUMABLE}).json()
        wait_job(client, job["id"], ("running",), until=in_epoch_two, timeout_s=120)
        assert stack.worker.kill_child()
        assert_resumed_from_epoch_one_checkpoint(client, job["id"])
        assert stack.worker.alive()


def test_redis_restart_loses_no_job(tmp_path):
    with service_stack("redis", tmp_path) as stack, stack.client() as client:
        long_run = {**RESUMABLE, "epochs": 4, "checkpoint_every_steps": 5}
        running = client.post("/v1/jobs", json={"type": "pretrain", "config": long_run}).json()
        wait_job(client, running["id"], ("running",), until=lambda j: j["progress"]["step"] >= 2)
        waiting = client.post("/v1/jobs", json={"type": "pretrain", "config": {**RESUMABLE, "epochs": 1}}).json()
        time.sleep(0.5)
        stack.restart_redis()  # the waiting job's message is gone with it

        first = wait_job(client, running["id"], timeout_s=150)
        second = wait_job(client, waiting["id"], timeout_s=150)
        assert first["status"] == "succeeded", (first, stack.logs())
        assert second["status"] == "succeeded", (second, stack.logs())
        assert first["attempts"] == 1  # the running job was not disturbed
        assert second["attempts"] == 1
        assert f"reconciler: job {waiting['id']} sent again" in stack.worker.output(10**7)
