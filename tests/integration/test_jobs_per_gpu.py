"""DCL_JOBS_PER_GPU: one worker runs several jobs at once, each in its own process with its
own lease, through the real API and a real worker (on the CPU here: the slots are the same)."""

from __future__ import annotations

import time

import pytest

from tests.integration.helpers import service_stack, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(420)]

CONFIG = {
    "encoder": "convnet_small",
    "dataset": {"source": "builtin:digits", "image_size": 16, "max_images": 96},
    "batch_size": 8,
    "epochs": 2,  # 24 short steps: long enough to overlap, short on a busy 2-core machine
    "lr": 0.05,
    "device": "cpu",
    "log_every_steps": 1,
}


def both_running(client, ids: list[str], timeout_s: float = 180) -> list[dict]:
    """Poll until every job in `ids` is `running` and has made a step, at the same moment."""
    deadline = time.monotonic() + timeout_s
    jobs: list[dict] = []
    while time.monotonic() < deadline:
        jobs = [client.get(f"/v1/jobs/{job_id}").json() for job_id in ids]
        if all(j["status"] == "running" and j["progress"]["step"] >= 1 for j in jobs):
            return jobs
        assert not any(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs), jobs
        time.sleep(0.2)
    raise TimeoutError(f"not all running at once after {timeout_s}s: {jobs}")


def test_a_worker_with_two_slots_runs_two_jobs_at_once(tmp_path):
    with service_stack("sqlite", tmp_path, env={"DCL_JOBS_PER_GPU": "2"}) as stack, stack.client() as client:
        ids = [client.post("/v1/jobs", json={"type": "pretrain", "config": {**CONFIG, "seed": seed}}).json()["id"]
               for seed in (0, 1)]
        running = both_running(client, ids)
        assert running[0]["worker"] != running[1]["worker"]  # two processes, two leases

        done = [wait_job(client, job_id, timeout_s=240) for job_id in ids]
        assert [j["status"] for j in done] == ["succeeded", "succeeded"], (done, stack.logs())
        assert all(j["attempts"] == 1 for j in done)


def test_cancelling_one_of_two_jobs_sharing_a_worker_leaves_the_other_running(tmp_path):
    with service_stack("sqlite", tmp_path, env={"DCL_JOBS_PER_GPU": "2"}) as stack, stack.client() as client:
        long_run = {**CONFIG, "epochs": 100}
        ids = [client.post("/v1/jobs", json={"type": "pretrain", "config": config}).json()["id"]
               for config in (long_run, CONFIG)]
        both_running(client, ids)
        assert client.post(f"/v1/jobs/{ids[0]}/cancel").status_code == 200

        cancelled = wait_job(client, ids[0], timeout_s=120)
        assert cancelled["status"] == "cancelled", (cancelled, stack.logs())
        other = wait_job(client, ids[1], timeout_s=240)
        assert other["status"] == "succeeded" and other["attempts"] == 1, (other, stack.logs())
