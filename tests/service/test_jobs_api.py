"""/v1/jobs over real HTTP: validation, ownership, encoder checks, listing, cancellation."""

from __future__ import annotations

import pytest

from tests.service.conftest import ALICE, image_zip

pytestmark = pytest.mark.integration

TINY = {"encoder": "convnet_small", "epochs": 1, "batch_size": 8, "dataset": "builtin:digits"}


def submit(client, config=None, **extra):
    return client.post("/v1/jobs", json={"type": "pretrain", "config": {**TINY, **(config or {})}, **extra})


def succeed(plane, job_id: str) -> None:
    """What a worker does, without one: claim and finish."""
    plane.lifecycle.claim(job_id, "test-worker")
    plane.lifecycle.succeed(job_id, "test-worker", {"loss": -1.0})


def test_submit_returns_202_with_location_and_the_full_spec(alice):
    r = submit(alice)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["type"] == "pretrain" and job["attempts"] == 0
    assert job["spec"]["config"]["temperature"] == 0.1  # defaults are filled in and stored
    assert job["progress"] == {"step": 0, "total_steps": None, "epoch": None, "fraction": None,
                               "elapsed_s": None, "eta_s": None}
    assert alice.get(r.headers["location"]).json()["id"] == job["id"]


@pytest.mark.parametrize("config, field", [
    ({"batch_size": 1}, "config.batch_size"),
    ({"temperature": 0}, "config.temperature"),
    ({"encoder": "vgg11"}, "config.encoder"),
    ({"learning_rate": 0.1}, "config.learning_rate"),
    ({"dataset": "/home/me/images"}, "config.dataset.source"),
    ({"dataset": "./pets.zip"}, "config.dataset.source"),
    ({"dataset": {"source": "torchvision:CIFAR10", "download": True}}, "config.dataset.download"),
    ({"dataset": "dataset:ds_00000000deadbeef"}, "config.dataset.source"),
    ({"dataset": "dataset:nope"}, "config.dataset.source"),
    # Accepted once, then failed at run time every time (issue 9, bug 7):
    ({"seed": 2 * 10**10}, "config.seed"),
    ({"projection_dim": 10**9}, "config.projection_dim"),
    ({"projection_hidden_dim": 10**9}, "config.projection_hidden_dim"),
    ({"batch_size": 2000}, "config.batch_size"),  # builtin:digits has 1,437 training images
    ({"batch_size": 32, "dataset": {"source": "builtin:digits", "max_images": 20}}, "config.batch_size"),
    ({"dataset": "torchvision:SVHN"}, "config.dataset.source"),  # not on this server's disk
])
def test_bad_config_is_422_naming_the_field(alice, config, field):
    r = submit(alice, config)
    assert r.status_code == 422, r.text
    body = r.json()
    assert field in [e["field"] for e in body["errors"]]
    assert body["detail"].startswith(field) or f"; {field}" in body["detail"]


def test_malformed_json_is_422_about_the_body(alice):
    r = alice.post("/v1/jobs", content="not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("body: JSON decode error at character 0; send a JSON object")


def test_non_finite_numbers_are_422_naming_the_field(alice):
    body = '{"type": "pretrain", "config": {"weight_decay": Infinity, "epochs": 1}}'
    r = alice.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "config.weight_decay"


def test_local_path_message_says_to_upload(alice):
    detail = submit(alice, {"dataset": "/data/pets"}).json()["detail"]
    assert "upload it with POST /v1/datasets" in detail


def test_malformed_requests_are_json_4xx(alice):
    for r in (
        alice.post("/v1/jobs", json={"type": "finetune"}),
        alice.post("/v1/jobs", json=[1, 2]),
        alice.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}),
        alice.get("/v1/jobs", params={"limit": 0}),
        alice.get("/v1/jobs", params={"status": "sleeping"}),
    ):
        assert r.status_code == 422, r.text
        assert isinstance(r.json()["detail"], str) and r.json()["detail"]
    assert "type" in alice.post("/v1/jobs", json={"type": "finetune"}).json()["detail"]
    assert alice.get("/v1/jobs", params={"limit": 0}).json()["errors"][0]["field"] == "query.limit"
    r = alice.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["detail"]
    r = alice.delete("/v1/jobs")
    assert r.status_code == 405 and r.json()["detail"]


def test_requests_without_a_valid_key_are_401(api):
    with api.client() as anonymous:
        r = anonymous.get("/v1/jobs")
        assert r.status_code == 401 and "API key" in r.json()["detail"]
    with api.client("not-a-key") as wrong:
        assert wrong.get("/v1/jobs").status_code == 401
    with api.client() as by_header:
        assert by_header.get("/v1/jobs", headers={"X-API-Key": ALICE}).status_code == 200


def test_other_key_gets_404_for_job_its_metrics_events_and_cancel(alice, bob):
    job_id = submit(alice).json()["id"]
    for method, path in (("GET", ""), ("GET", "/metrics"), ("GET", "/events"), ("POST", "/cancel"),
                         ("GET", "/artifacts"), ("GET", "/artifacts/encoder.safetensors")):
        r = bob.request(method, f"/v1/jobs/{job_id}{path}")
        assert r.status_code == 404, (path, r.text)
        assert r.json()["detail"] == f"job {job_id} not found"
    assert job_id not in [j["id"] for j in bob.get("/v1/jobs").json()["items"]]
    assert alice.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"  # bob's cancel did nothing


def test_other_key_cannot_probe_my_encoder(alice, bob, api_plane):
    job_id = submit(alice).json()["id"]
    succeed(api_plane, job_id)
    probe = {"type": "linear_probe", "encoder_job": job_id, "train": "builtin:digits", "test": "builtin:digits"}
    r = bob.post("/v1/jobs", json=probe)
    assert r.status_code == 404 and job_id in r.json()["detail"]
    r = alice.post("/v1/jobs", json=probe)
    assert r.status_code == 202, r.text


def test_probe_needs_a_succeeded_pretrain_job(alice, api_plane):
    pretrain = submit(alice).json()["id"]
    probe = {"type": "linear_probe", "encoder_job": pretrain, "train": "builtin:digits", "test": "builtin:digits",
             "classifier": "knn"}
    r = alice.post("/v1/jobs", json=probe)
    assert r.status_code == 409 and "queued" in r.json()["detail"]
    r = alice.post("/v1/jobs", json={**probe, "encoder_job": "job_missing"})
    assert r.status_code == 404
    succeed(api_plane, pretrain)
    embed = alice.post("/v1/jobs", json={"type": "embed", "encoder_job": pretrain, "data": "builtin:digits"})
    assert embed.status_code == 202, embed.text
    r = alice.post("/v1/jobs", json={**probe, "encoder_job": embed.json()["id"]})
    assert r.status_code == 409 and "embed job" in r.json()["detail"]


def test_list_is_paged_and_filtered(alice):
    ids = [submit(alice).json()["id"] for _ in range(3)]
    alice.post(f"/v1/jobs/{ids[0]}/cancel")
    page = alice.get("/v1/jobs", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["total"] >= 3 and page["limit"] == 2
    cancelled = alice.get("/v1/jobs", params={"status": "cancelled", "type": "pretrain"}).json()
    assert ids[0] in [j["id"] for j in cancelled["items"]]
    assert all(j["status"] == "cancelled" for j in cancelled["items"])
    assert alice.get("/v1/jobs", params={"type": "embed", "status": "running"}).json()["total"] == 0


def test_cancel_queued_job_then_cancel_again_is_409(alice):
    job_id = submit(alice).json()["id"]
    r = alice.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = alice.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409 and "already cancelled" in r.json()["detail"]


def test_cancel_running_job_asks_its_worker_to_stop(alice, api_plane):
    job_id = submit(alice).json()["id"]
    api_plane.lifecycle.claim(job_id, "test-worker")
    r = alice.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "running" and r.json()["cancel_requested"]
    assert api_plane.jobs.is_cancel_requested(job_id)


def test_progress_eta_and_metrics_series(alice, api_plane):
    job_id = submit(alice).json()["id"]
    api_plane.lifecycle.claim(job_id, "test-worker")
    api_plane.lifecycle.progress(job_id, "test-worker", 25, total_steps=100, epoch=0.25,
                                 rows=[{"step": s, "loss": -s / 10, "lr": 0.1} for s in (10, 20, 25)])
    job = alice.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "running" and job["worker"] == "test-worker" and job["attempts"] == 1
    p = job["progress"]
    assert p["step"] == 25 and p["total_steps"] == 100 and p["fraction"] == 0.25 and p["epoch"] == 0.25
    assert p["elapsed_s"] >= 0 and p["eta_s"] == pytest.approx(3 * p["elapsed_s"], rel=0.5, abs=0.5)
    assert job["latest_metrics"]["loss"] == -2.5
    series = alice.get(f"/v1/jobs/{job_id}/metrics").json()
    assert [r["step"] for r in series["items"]] == [10, 20, 25] and series["next_since"] == 25
    newer = alice.get(f"/v1/jobs/{job_id}/metrics", params={"since": 10}).json()
    assert [r["step"] for r in newer["items"]] == [20, 25]


def test_a_batch_larger_than_an_uploaded_dataset_is_422(alice, tmp_path):
    with open(image_zip(tmp_path / "pets.zip"), "rb") as f:
        dataset = alice.post("/v1/datasets", files={"file": ("pets.zip", f, "application/zip")}).json()
    r = submit(alice, {"dataset": dataset["source"], "batch_size": 8})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "config.batch_size"
    assert "more than the 6 images" in r.json()["detail"]
    assert submit(alice, {"dataset": dataset["source"], "batch_size": 6}).status_code == 202


def test_torchvision_dataset_on_disk_is_accepted_and_the_message_hides_server_paths(alice, api):
    r = submit(alice, {"dataset": "torchvision:CIFAR10"})
    assert r.status_code == 422 and "DCL_TORCHVISION_ROOT" in r.json()["detail"]
    assert str(api.data_dir) not in r.text
    folder = api.data_dir / "torchvision" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"x")
    assert submit(alice, {"dataset": "torchvision:CIFAR10"}).status_code == 202


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_value_in_a_bounded_field_is_reported_as_such(alice, value):
    body = '{"type": "pretrain", "config": {"temperature": %s}}' % value
    r = alice.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    error = r.json()["errors"][0]
    assert error["field"] == "config.temperature" and "finite number" in error["msg"], error


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_job_without_the_json_content_type_is_415_saying_so(alice, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = alice.post("/v1/jobs", content=b'{"type": "pretrain"}', headers=headers)
    assert r.status_code == 415 and "Content-Type: application/json" in r.json()["detail"]
