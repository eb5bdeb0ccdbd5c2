"""Quick recovery (issue 9, bug 9), with real processes:

- the pool process training a job is SIGKILLed: the worker's next pool process takes the job
  over at once instead of waiting for the dead process's lease (60 s here) to run out;
- a job accepted while the broker (a real redis-server) is down starts soon after the broker
  comes back, instead of after the reconciler's requeue delay (300 s here).

No time is asserted; the waits are shorter than the old delays, so the old behaviour fails.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.helpers import service_stack, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(420)]

# The production timings the fixes are about (the fault tests shorten them instead).
PRODUCTION_TIMING = {"DCL_LEASE_SECONDS": "60", "DCL_HEARTBEAT_SECONDS": "1", "DCL_REQUEUE_AFTER_SECONDS": "300"}

CONFIG = {
    "encoder": "convnet_small",
    "dataset": {"source": "builtin:digits", "image_size": 16, "max_images": 160},
    "batch_size": 8,
    "epochs": 2,
    "lr": 0.05,
    "device": "cpu",
    "log_every_steps": 1,
    "checkpoint_every_steps": 10,
}


def test_a_sigkilled_job_process_is_taken_over_before_its_lease_runs_out(tmp_path):
    with service_stack("sqlite", tmp_path, env=PRODUCTION_TIMING) as stack, stack.client() as client:
        job = client.post("/v1/jobs", json={"type": "pretrain", "config": CONFIG}).json()
        wait_job(client, job["id"], ("running",), until=lambda j: j["progress"]["step"] >= 12, timeout_s=120)
        assert stack.worker.kill_child()

        # Before the fix: skipped by the next process, `running` and frozen until the 60 s lease ran out.
        wait_job(client, job["id"], ("running", "succeeded"), until=lambda j: j["attempts"] == 2, timeout_s=30)
        done = wait_job(client, job["id"], timeout_s=240)
        assert done["status"] == "succeeded", (done, stack.logs())
        assert "taken over at once" in stack.worker.output(10**7)


def test_a_job_accepted_while_the_broker_is_down_starts_when_it_returns(tmp_path):
    with service_stack("redis", tmp_path, env=PRODUCTION_TIMING) as stack, stack.client() as client:
        stack.stop_redis()
        response = client.post("/v1/jobs", json={"type": "pretrain", "config": {**CONFIG, "epochs": 1}})
        assert response.status_code == 202, response.text  # in the store, not yet in the broker
        job = response.json()
        time.sleep(2)
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
        stack.start_redis()

        # Before the fix: sent again only by the reconciler, 300 s after the submit.
        started = wait_job(client, job["id"], ("running", "succeeded"), timeout_s=60)
        assert started["attempts"] == 1
        done = wait_job(client, job["id"], timeout_s=240)
        assert done["status"] == "succeeded", (done, stack.logs())
        assert "now that the broker is back" in stack.api.output()

