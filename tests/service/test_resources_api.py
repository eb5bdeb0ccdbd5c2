"""`resources.gpus` at submit time: refused with the reason when no worker seen lately has that
many GPUs, queued for the worker that has when it exists (busy or not)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

JOB = {"type": "pretrain", "config": {"epochs": 1, "batch_size": 96}}


def test_job_no_worker_can_hold_is_refused_and_one_a_worker_can_hold_waits(alice, api_plane):
    refused = alice.post("/v1/jobs", json={**JOB, "resources": {"gpus": 3}})
    assert refused.status_code == 422, refused.text
    detail = refused.text
    assert "resources" in detail and "gpus" in detail and "no worker can run a job on 3 GPUs" in detail
    assert "dcl worker --gpus 0,1,2" in detail

    api_plane.workers.seen("four-gpus@box", {"queues": "gpu,gpu-x2,gpu-x3,gpu-x4,cpu", "gpus": 4})
    accepted = alice.post("/v1/jobs", json={**JOB, "resources": {"gpus": 3}})
    assert accepted.status_code == 202, accepted.text
    job = api_plane.jobs.get(accepted.json()["id"])
    assert job.queue == "gpu-x3" and job.status == "queued"  # waits for that worker
    assert job.spec_data["resources"] == {"gpus": 3} and job.spec.devices == 3

    too_many = alice.post("/v1/jobs", json={**JOB, "resources": {"gpus": 8}})
    assert too_many.status_code == 422 and "at most 4" in too_many.text


def test_default_is_one_gpu_and_bad_counts_are_422(alice, api_plane):
    job = alice.post("/v1/jobs", json=JOB).json()
    assert job["spec"]["resources"] == {"gpus": 1} and api_plane.jobs.get(job["id"]).queue == "gpu"
    for bad in ({"gpus": 0}, {"gpus": "many"}, {"cpus": 2}):
        response = alice.post("/v1/jobs", json={**JOB, "resources": bad})
        assert response.status_code == 422 and "resources" in response.text, response.text
    uneven = alice.post("/v1/jobs", json={**JOB, "config": {"batch_size": 10}, "resources": {"gpus": 4}})
    assert uneven.status_code == 422 and "divisible by resources.gpus" in uneven.text
