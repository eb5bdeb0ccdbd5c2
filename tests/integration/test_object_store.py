"""DCL_STORAGE_URL=s3://... end to end, with real processes: an API and workers that share no
folder, only the job store, the broker and a bucket (moto's standalone server over real HTTP).

- upload, pretrain, probe, download: every file matches its sha256, and the API's data folder
  holds no job's files (they come from the bucket);
- a worker SIGKILLed mid-job on "one machine" (its own data folder): another worker with an empty
  folder resumes the job from the checkpoint uploaded to the bucket; every step is recorded once;
- the store stopped mid-job: a download answers 503 naming the store, and the job still succeeds
  once the store is back;
- presigned downloads: a 307 to the object, only for the key that owns the job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.fixtures.s3 import S3Endpoint, s3_endpoint
from tests.fixtures.servers import run_api_server
from tests.fixtures.workers import start_worker
from tests.integration.helpers import TINY_PRETRAIN, image_zip, sha256_hex, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]

KEY, OTHER_KEY = "key-one-secret", "key-two-secret"


@contextmanager
def split_stack(root: Path, endpoint: S3Endpoint, **api_env) -> Iterator[dict]:
    """An API in root/api and a worker in root/worker-0, sharing only the SQLite job store and
    broker (as PostgreSQL and Redis would be shared between machines) and the bucket."""
    api_dir = root / "api"
    shared = {"DCL_DATABASE_URL": f"sqlite:///{api_dir}/dcl.db", "DCL_BROKER_URL": f"sqla+sqlite:///{api_dir}/broker.db",
              "DCL_STORE_RETRY_SECONDS": "120", **endpoint.env(prefix=root.name[:40])}
    with ExitStack() as stack:
        api = stack.enter_context(run_api_server(api_dir, keys=[KEY, OTHER_KEY], env={**shared, **api_env}))
        workers = []

        def add_worker():
            worker = start_worker(root / f"worker-{len(workers)}", env=shared)
            workers.append(worker)
            stack.callback(worker.stop)
            return worker

        add_worker()
        yield {"api": api, "workers": workers, "add_worker": add_worker, "api_dir": api_dir, "env": shared}


def _upload(client: httpx.Client) -> str:
    answer = client.post("/v1/datasets", files={"file": ("shapes.zip", image_zip(), "application/zip")})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _pretrain(client: httpx.Client, dataset_id: str, **config) -> str:
    spec = {"type": "pretrain", "config": {**TINY_PRETRAIN, "dataset": {"source": f"dataset:{dataset_id}",
                                                                       "image_size": 16}, **config}}
    answer = client.post("/v1/jobs", json=spec)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def _objects(endpoint: S3Endpoint, prefix: str) -> list[str]:
    pages = endpoint.client().get_paginator("list_objects_v2").paginate(Bucket=endpoint.bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", []) if prefix in item["Key"]]


def test_upload_pretrain_probe_download_through_the_bucket(tmp_path):
    with s3_endpoint() as endpoint, split_stack(tmp_path, endpoint) as stack, \
            stack["api"].client(KEY) as client:
        dataset_id = _upload(client)
        job_id = _pretrain(client, dataset_id)
        done = wait_job(client, job_id, timeout_s=240)
        assert done["status"] == "succeeded", (done, stack["workers"][0].output())
        probe = client.post("/v1/jobs", json={
            "type": "linear_probe", "encoder_job": job_id, "epochs": 5, "device": "cpu",
            "train": {"source": f"dataset:{dataset_id}", "image_size": 16},
            "test": {"source": f"dataset:{dataset_id}", "image_size": 16}})
        assert probe.status_code == 202, probe.text
        probed = wait_job(client, probe.json()["id"], timeout_s=240)
        assert probed["status"] == "succeeded", (probed, stack["workers"][0].output())

        listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
        assert {"encoder.safetensors", "encoder.json"} <= {item["name"] for item in listed}
        for item in listed:
            answer = client.get(item["url"])
            assert answer.status_code == 200, answer.text
            assert sha256_hex(answer.content) == item["sha256"] == answer.headers["etag"].strip('"')
            assert answer.headers["repr-digest"].startswith("sha-256=:")
        encoder = next(item for item in listed if item["name"] == "encoder.safetensors")
        part = client.get(encoder["url"], headers={"Range": "bytes=10-29"})
        assert part.status_code == 206 and len(part.content) == 20
        assert part.headers["content-range"] == f"bytes 10-29/{encoder['size']}"
        assert client.get(encoder["url"], headers={"Range": "bytes=999999999-"}).status_code == 416
        assert client.get(encoder["url"], headers={"If-None-Match": f'"{encoder["sha256"]}"'}).status_code == 304

        # Nothing of the job under the API's data folder: what it served came from the bucket.
        assert not (stack["api_dir"] / "artifacts" / job_id).exists()
        assert any(key.endswith(f"jobs/{job_id}/encoder.safetensors") for key in _objects(endpoint, job_id))
        assert any(key.endswith(f"datasets/{dataset_id}/dataset.tar") for key in _objects(endpoint, dataset_id))

        # Deleting the job and the dataset deletes their objects.
        assert client.delete(f"/v1/jobs/{probe.json()['id']}").status_code == 204
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
        assert _objects(endpoint, job_id) == [] and _objects(endpoint, dataset_id) == []


def test_a_job_killed_on_one_machine_resumes_on_another_from_the_bucket(tmp_path):
    with s3_endpoint() as endpoint, split_stack(tmp_path, endpoint) as stack, \
            stack["api"].client(KEY) as client:
        dataset_id = _upload(client)
        job_id = _pretrain(client, dataset_id, epochs=6, checkpoint_every_steps=2)
        first = stack["workers"][0]
        checkpoint = f"jobs/{job_id}/checkpoints/last.pt"
        wait_job(client, job_id, ("running",), timeout_s=180,
                 until=lambda j: j["progress"]["step"] >= 4 and any(k.endswith(checkpoint)
                                                                      for k in _objects(endpoint, job_id)))
        first.kill()  # the whole machine's worker, at once
        second = stack["add_worker"]()  # an empty data folder: only the bucket has the checkpoint
        done = wait_job(client, job_id, timeout_s=300)
        assert done["status"] == "succeeded", (done, second.output())
        assert done["attempts"] >= 2
        assert "resuming from the checkpoint uploaded by its previous worker" in second.output(10**7)
        rows = client.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 10000}).json()["items"]
        steps = [row["step"] for row in rows]
        assert len(steps) == len(set(steps)) and steps == sorted(steps)
        assert steps[-1] == done["progress"]["step"]


def test_a_store_outage_mid_job_gives_503_downloads_and_the_job_still_succeeds(tmp_path):
    with s3_endpoint() as endpoint, split_stack(tmp_path, endpoint) as stack, \
            stack["api"].client(KEY) as client:
        dataset_id = _upload(client)
        earlier = _pretrain(client, dataset_id)
        assert wait_job(client, earlier, timeout_s=240)["status"] == "succeeded"
        url = client.get(f"/v1/jobs/{earlier}/artifacts").json()["items"][0]["url"]

        job_id = _pretrain(client, dataset_id, epochs=3, checkpoint_every_steps=2)
        wait_job(client, job_id, ("running",), until=lambda j: j["progress"]["step"] >= 1, timeout_s=180)
        endpoint.stop()
        try:
            answer = client.get(url)
            assert answer.status_code == 503, answer.text
            assert "object store" in answer.json()["detail"]
            assert KEY not in answer.text
            time.sleep(20)
        finally:
            endpoint.start()
        done = wait_job(client, job_id, timeout_s=300)
        assert done["status"] == "succeeded", (done, stack["workers"][0].output())
        assert client.get(url).status_code == 200


def test_presigned_downloads_redirect_only_the_owner(tmp_path):
    with s3_endpoint() as endpoint, split_stack(tmp_path, endpoint, DCL_PRESIGNED_DOWNLOADS="true") as stack, \
            stack["api"].client(KEY) as client, stack["api"].client(OTHER_KEY) as other:
        dataset_id = _upload(client)
        job_id = _pretrain(client, dataset_id)
        assert wait_job(client, job_id, timeout_s=240)["status"] == "succeeded"
        item = next(i for i in client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
                    if i["name"] == "encoder.safetensors")
        answer = client.get(item["url"])
        assert answer.status_code == 307
        assert sha256_hex(httpx.get(answer.headers["location"]).content) == item["sha256"]
        assert other.get(item["url"]).status_code == 404
        for hostile in ("..%2f..%2fetc%2fpasswd", "%2e%2e/x", "a%00b", "../encoder.json"):
            assert client.get(f"/v1/jobs/{job_id}/artifacts/{hostile}").status_code in (400, 404)
