"""End to end through HTTP with real processes: uvicorn, `python -m worker`, a broker
(embedded SQLite, or a real redis-server) and a job store (SQLite, or PostgreSQL when
DCL_TEST_POSTGRES_URL is set).

One stack per broker/store mode serves every test of the mode, in file order: a pretrain
job on an uploaded zip, a probe of its encoder, a duplicate delivery, a cancellation.
"""

from __future__ import annotations

import base64
import time

import pytest

from tests.integration.helpers import (
    TINY_PRETRAIN,
    image_zip,
    service_stack,
    sha256_hex,
    sse_events,
    wait_job,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module", params=["sqlite", "redis", "postgres"])
def stack(request, tmp_path_factory):
    with service_stack(request.param, tmp_path_factory.mktemp(request.param)) as services:
        yield services
        # Shown by pytest only when a test of this module failed.
        print(services.logs())


@pytest.fixture(scope="module")
def pretrained(stack):
    """Upload a zip of generated images, pretrain on it, follow the event stream to the end."""
    with stack.client() as client:
        upload = client.post("/v1/datasets", files={"file": ("shapes.zip", image_zip(), "application/zip")})
        assert upload.status_code == 201, upload.text
        dataset = upload.json()
        assert dataset["summary"]["num_images"] == 48
        config = {**TINY_PRETRAIN, "dataset": {"source": dataset["source"], "image_size": 16}}
        submitted = client.post("/v1/jobs", json={"type": "pretrain", "config": config})
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert submitted.headers["location"] == f"/v1/jobs/{job['id']}"
        events = sse_events(client, f"/v1/jobs/{job['id']}/events", timeout_s=120)
    return {"job": job, "events": events, "dataset": dataset}


def test_pretrain_on_uploaded_zip_streams_progress_and_serves_encoder(stack, pretrained, tmp_path):
    job_id = pretrained["job"]["id"]
    events = pretrained["events"]
    end = events[-1]["data"]
    assert end["status"] == "succeeded", stack.logs()
    assert end["attempts"] == 1
    assert end["progress"]["step"] == end["progress"]["total_steps"] == 3  # 48 images // batch 16
    metrics = [e for e in events if e.get("event") == "metrics"]
    assert [int(e["id"]) for e in metrics] == [1, 2, 3]
    assert all(e["data"]["step"] == int(e["id"]) for e in metrics)
    assert all("loss" in e["data"] and "lr" in e["data"] for e in metrics)
    # A 3-step job may start and end between two polls of the stream: its record says it ran.
    assert end["started_at"] is not None and end["started_at"] <= end["finished_at"]

    with stack.client() as client:
        listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
        names = {a["name"]: a for a in listed}
        assert {"encoder.safetensors", "encoder.json", "metrics.jsonl"} <= set(names)
        download = client.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors")
        assert download.status_code == 200
        digest = sha256_hex(download.content)
        assert digest == names["encoder.safetensors"]["sha256"]
        assert download.headers["repr-digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:"
        assert download.headers["etag"] == f'"{digest}"'
        meta = client.get(f"/v1/jobs/{job_id}/artifacts/encoder.json")
        assert meta.status_code == 200

    (tmp_path / "encoder.safetensors").write_bytes(download.content)
    (tmp_path / "encoder.json").write_bytes(meta.content)
    import torch

    from dcl_core.export.encoder import load_encoder

    encoder = load_encoder(tmp_path)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        features = encoder(encoder.transform(images))
    assert features.shape == (4, encoder.feature_dim)
    assert torch.isfinite(features).all()


def test_linear_probe_of_the_pretrained_encoder_returns_accuracy(stack, pretrained):
    probe = {
        "type": "linear_probe",
        "encoder_job": pretrained["job"]["id"],
        "train": {"source": "builtin:digits", "max_images": 200},
        "test": {"source": "builtin:digits", "split": "test", "max_images": 100},
        "epochs": 30,
        "device": "cpu",
    }
    with stack.client() as client:
        submitted = client.post("/v1/jobs", json=probe)
        assert submitted.status_code == 202, submitted.text
        events = sse_events(client, f"/v1/jobs/{submitted.json()['id']}/events", timeout_s=120)
        job = events[-1]["data"]
        assert job["status"] == "succeeded", (job, stack.logs())
        accuracy = job["result"]["accuracy"]
        assert 0.0 <= accuracy <= 1.0
        assert accuracy > 0.2  # ten classes: well above chance even for a 3-step encoder
        artifacts = client.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]
        assert [a["name"] for a in artifacts] == ["probe.json"]
        served = client.get(f"/v1/jobs/{job['id']}/artifacts/probe.json").json()
        assert served["accuracy"] == pytest.approx(accuracy)


def test_duplicate_delivery_of_a_job_runs_it_once(stack, pretrained):
    from service.queue import enqueue

    config = {**TINY_PRETRAIN, "dataset": {"source": pretrained["dataset"]["source"], "image_size": 16}}
    celery = stack.celery()
    with stack.client() as client:
        job = client.post("/v1/jobs", json={"type": "pretrain", "config": config}).json()
        # Two more messages for the same job, as a redelivery (celery#5935) would produce.
        enqueue(job["id"], "cpu", app=celery)
        enqueue(job["id"], "cpu", app=celery)
        done = wait_job(client, job["id"])
        assert done["status"] == "succeeded", (done, stack.logs())
        # Both extra deliveries reach a worker and change nothing.
        deadline = time.monotonic() + 60
        while stack.worker.output(10**7).count(f"job {job['id']}: not claimed") < 2:
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.2)
        again = client.get(f"/v1/jobs/{job['id']}").json()
        assert again["status"] == "succeeded"
        assert again["attempts"] == 1
        assert again["finished_at"] == done["finished_at"]
        rows = client.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
        assert [r["step"] for r in rows] == [1, 2, 3]
        assert {r["attempt"] for r in rows} == {1}


def test_cancel_stops_a_running_job_and_frees_the_worker(stack, pretrained):
    long_run = {**TINY_PRETRAIN, "epochs": 500, "checkpoint_every_steps": 2,
                "dataset": {"source": pretrained["dataset"]["source"], "image_size": 16}}
    with stack.client() as client:
        running = client.post("/v1/jobs", json={"type": "pretrain", "config": long_run}).json()
        waiting = client.post("/v1/jobs", json={"type": "pretrain", "config": long_run}).json()
        wait_job(client, running["id"], ("running",), until=lambda j: j["progress"]["step"] >= 2)

        # A queued job is cancelled at once and never starts.
        assert client.post(f"/v1/jobs/{waiting['id']}/cancel").json()["status"] == "cancelled"

        response = client.post(f"/v1/jobs/{running['id']}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["cancel_requested"] is True
        cancelled = wait_job(client, running["id"], timeout_s=30)
        assert cancelled["status"] == "cancelled", (cancelled, stack.logs())
        assert cancelled["progress"]["step"] < cancelled["progress"]["total_steps"]
        # Its last checkpoint is kept and listed, and downloads whole (checked against its sha256).
        last = (stack.data_dir / "artifacts" / running["id"] / "checkpoints" / "last.pt").read_bytes()
        listed = {a["name"]: a for a in client.get(f"/v1/jobs/{running['id']}/artifacts").json()["items"]}
        assert listed["checkpoint.pt"]["sha256"] == sha256_hex(last), stack.logs()
        assert listed["checkpoint.pt"]["size"] == len(last)
        download = client.get(listed["checkpoint.pt"]["url"])
        assert download.status_code == 200
        assert download.content == last
        assert client.get(f"/v1/jobs/{running['id']}/artifacts/last.pt").status_code == 404

        # The worker is free: the next job runs to the end.
        embed = {"type": "embed", "encoder_job": pretrained["job"]["id"],
                 "data": {"source": pretrained["dataset"]["source"]}, "device": "cpu"}
        nxt = client.post("/v1/jobs", json=embed).json()
        done = wait_job(client, nxt["id"], timeout_s=90)
        assert done["status"] == "succeeded", (done, stack.logs())
        assert done["result"]["shape"][0] == 48
        assert client.get(f"/v1/jobs/{waiting['id']}").json()["attempts"] == 0
