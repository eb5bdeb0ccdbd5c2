"""A pretrain job on several devices through the real API and worker: the worker launches it
under torchrun (2 gloo processes on the CPU, the worker offering 2 CPU "devices" by the
test-only DCL_WORKER_CPU_DEVICES), reports one progress, ends with the same result a one-device
job has (its `evaluate` scores too), and a job no worker can hold is refused at submit time."""

from __future__ import annotations

import pytest

from tests.fixtures.servers import run_api_server
from tests.fixtures.workers import start_worker
from tests.integration.helpers import TINY_PRETRAIN, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(400)]

CONFIG = {**TINY_PRETRAIN, "dataset": {"source": "builtin:digits", "image_size": 16, "max_images": 48}}
EVALUATE = {"train": {"source": "builtin:digits", "max_images": 200},
            "test": {"source": "builtin:digits", "split": "test", "max_images": 100}, "classifier": "both"}


def test_two_device_job_runs_under_torchrun_and_larger_ones_are_refused(tmp_path):
    env = {"DCL_WORKER_CPU_DEVICES": "2"}
    with run_api_server(tmp_path / "data", env=env) as api:
        worker = start_worker(api.data_dir, env=env)
        try:
            with api.client() as http:
                ready = http.get("/readyz").json()
                (seen,) = ready["workers"]["items"]
                assert seen["info"]["cpu_devices"] == 2 and "cpu-x2" in seen["info"]["queues"].split(",")

                refused = http.post("/v1/jobs", json={"type": "pretrain", "config": CONFIG, "resources": {"gpus": 4}})
                assert refused.status_code == 422, refused.text
                assert "resources.gpus" in refused.text and "at most 2" in refused.text
                uneven = http.post("/v1/jobs", json={"type": "pretrain", "config": {**CONFIG, "batch_size": 15},
                                                     "resources": {"gpus": 2}})
                assert uneven.status_code == 422 and "divisible by resources.gpus" in uneven.text

                job = http.post("/v1/jobs", json={"type": "pretrain", "config": {**CONFIG, "evaluate": EVALUATE},
                                                  "resources": {"gpus": 2}})
                assert job.status_code == 202, job.text
                assert job.json()["spec"]["resources"] == {"gpus": 2}
                done = wait_job(http, job.json()["id"], timeout_s=300)
                assert done["status"] == "succeeded", worker.output()
                rows = http.get(f"/v1/jobs/{done['id']}/metrics").json()["items"]
                names = {a["name"] for a in http.get(f"/v1/jobs/{done['id']}/artifacts").json()["items"]}
                meta = http.get(f"/v1/jobs/{done['id']}/artifacts/encoder.json").json()
        finally:
            worker.stop()
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 3  # one progress, 48 // 16 steps
    assert [r["step"] for r in rows] == [1, 2, 3]  # rank 0 alone reports
    assert done["result"]["devices"] == 2 and done["result"]["steps"] == 3
    # The multi-device result is built as the one-device one is: the evaluate block's scores are there.
    scores = done["result"]["scores"]
    assert {"linear_top1", "knn_top1", "recall_at_1", "map_at_r"} <= set(scores) and all(0 <= v <= 1 for v in scores.values())
    assert set(done["result"]["evaluation"]) == {"logistic", "knn", "retrieval"}
    assert meta["scores"] == scores
    assert {"encoder.safetensors", "encoder.json", "metrics.jsonl"} <= names
    assert not any(name.startswith(".") for name in names)  # the torchrun plumbing is not an artifact
    assert "torchrun on 2 devices" in worker.output(10**7)
