"""Admission through the app, in process (FastAPI's TestClient, no server): what a submit is
refused for, with the status and the field a client sees. The live-server tests cover the rest."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.control.settings import Settings

CONFIG = {"encoder": "convnet_small", "device": "cpu", "dataset": {"source": "builtin:digits", "image_size": 16}}


@pytest.fixture
def client(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", max_active_jobs_per_key=3)
    with TestClient(create_app(settings)) as c:
        c.plane = c.app.state.plane
        yield c


def submit(client, body: dict):
    return client.post("/v1/jobs", json=body)


def test_a_pretrain_job_is_admitted_and_queued(client):
    r = submit(client, {"type": "pretrain", "config": CONFIG})
    assert r.status_code == 202, r.text
    job = client.plane.jobs.get(r.json()["id"])
    assert (job.status, job.queue, job.spec.config.encoder) == ("queued", "cpu", "convnet_small")
    assert r.headers["Location"] == f"/v1/jobs/{job.id}"


def test_a_local_path_is_a_422_naming_the_field(client):
    r = submit(client, {"type": "pretrain", "config": {**CONFIG, "dataset": "/data/images"}})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "config.dataset.source"


def test_a_probe_of_a_missing_or_unfinished_encoder_is_404_or_409(client):
    probe = {"type": "linear_probe", "encoder_job": "job_0000000000000000",
             "train": "builtin:digits", "test": "builtin:digits"}
    assert submit(client, probe).status_code == 404
    encoder = submit(client, {"type": "pretrain", "config": CONFIG}).json()["id"]
    r = submit(client, {**probe, "encoder_job": encoder})
    assert r.status_code == 409 and "is queued" in r.json()["detail"]


def test_a_multi_device_job_without_such_a_worker_is_refused(client):
    r = submit(client, {"type": "pretrain", "config": {**CONFIG, "batch_size": 64}, "resources": {"gpus": 2}})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "resources.gpus" and "--gpus 0,1" in r.json()["detail"]


def test_the_active_job_cap_is_a_429_with_retry_after(client):
    for _ in range(3):
        assert submit(client, {"type": "pretrain", "config": CONFIG}).status_code == 202
    r = submit(client, {"type": "pretrain", "config": CONFIG})
    assert r.status_code == 429 and r.headers["Retry-After"]
    assert "limit is 3" in r.json()["detail"]


def test_a_sweep_larger_than_the_cap_is_refused_up_front(client):
    r = submit(client, {"type": "sweep", "config": CONFIG, "grid": {"seed": [0, 1, 2, 3]}})
    assert r.status_code == 429 and "4 more jobs" in r.json()["detail"]
    assert client.plane.jobs.list("local")[1] == 0


def test_lifecycle_refusals_are_409s_and_a_deleted_job_is_gone(client):
    r = submit(client, {"type": "pretrain", "config": {**CONFIG, "dataset": {"source": "builtin:digits",
                                                                          "split": "train"}},
                        "resources": {"gpus": 1}})
    job_id = r.json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/retry").status_code == 409  # queued: nothing to retry
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 409  # still queued
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 409  # already ended
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
