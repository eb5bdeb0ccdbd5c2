"""The event stream (SSE) and artifact downloads over real HTTP. The job's worker side is
played by the test through the job store, and artifact files are written into the API's
artifact folder directly (the end-to-end run with a real worker is in tests/worker/)."""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import httpx
import pytest

from httpx_sse import EventSource

from service.control.models import ArtifactFile
from tests.service.conftest import ALICE

pytestmark = pytest.mark.integration


def new_job(client) -> str:
    r = client.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def read_stream(api, job_id, headers=None, params=None, timeout=20.0):
    """The raw text of the job's event stream, until the server ends it."""
    with httpx.Client(base_url=api.url, timeout=timeout) as c:
        with c.stream("GET", f"/v1/jobs/{job_id}/events", params=params,
                      headers={"Authorization": f"Bearer {ALICE}", **(headers or {})}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            return r.read().decode()


def events_of(text: str):
    """The events of a stream's text, read as the client reads them (httpx-sse)."""
    from service.client import Event

    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())
    return [Event.parse(e.event, e.data, e.id) for e in EventSource(response).iter_sse()]


def test_event_stream_carries_metrics_with_step_ids_until_the_job_ends(alice, api, api_plane):
    job_id = new_job(alice)
    lifecycle = api_plane.lifecycle

    def play_worker():
        time.sleep(0.5)  # long enough for keep-alive comments while queued
        lifecycle.claim(job_id, "w1")
        for step in (10, 20, 30):
            lifecycle.progress(job_id, "w1", step, total_steps=30, epoch=step / 30,
                               rows=[{"step": step, "loss": -step / 10}])
            time.sleep(0.1)
        lifecycle.succeed(job_id, "w1", {"loss": -3.0})

    worker = threading.Thread(target=play_worker)
    worker.start()
    text = read_stream(api, job_id)
    worker.join()

    assert ": keep-alive" in text
    assert "id: 10\nevent: metrics\ndata: " in text
    events = events_of(text)
    metrics = [e for e in events if e.event == "metrics"]
    assert [(e.id, e.data["step"], e.data["loss"]) for e in metrics] == [("10", 10, -1.0), ("20", 20, -2.0),
                                                                        ("30", 30, -3.0)]
    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "succeeded"
    assert events[-1].event == "end" and events[-1].data["status"] == "succeeded"
    assert events[-1].data["progress"]["step"] == 30


def test_event_stream_resumes_after_last_event_id(alice, api, api_plane):
    job_id = new_job(alice)
    lifecycle = api_plane.lifecycle
    lifecycle.claim(job_id, "w1")
    lifecycle.progress(job_id, "w1", 40, total_steps=40, epoch=1.0,
                       rows=[{"step": s, "loss": -1.0} for s in (10, 20, 30, 40)])
    lifecycle.succeed(job_id, "w1", {})
    resumed = events_of(read_stream(api, job_id, headers={"Last-Event-ID": "20"}))
    assert [e.data["step"] for e in resumed if e.event == "metrics"] == [30, 40]
    by_query = events_of(read_stream(api, job_id, params={"since": 30}))
    assert [e.data["step"] for e in by_query if e.event == "metrics"] == [40]
    everything = events_of(read_stream(api, job_id))
    assert [e.data["step"] for e in everything if e.event == "metrics"] == [10, 20, 30, 40]


def test_event_stream_of_a_cancelled_job_ends(alice, api):
    job_id = new_job(alice)
    alice.post(f"/v1/jobs/{job_id}/cancel")
    events = events_of(read_stream(api, job_id))
    assert events[-1].event == "end" and events[-1].data["status"] == "cancelled"


@pytest.fixture
def finished_job(alice, api, api_plane):
    """A succeeded job with two artifacts on disk, registered with their sha256."""
    job_id = new_job(alice)
    folder = api.data_dir / "artifacts" / job_id
    folder.mkdir(parents=True)
    files = {"encoder.safetensors": bytes(range(256)) * 400, "encoder.json": b'{"arch": "convnet_small"}'}
    listed = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        listed.append(ArtifactFile(name, len(data), hashlib.sha256(data).hexdigest()))
    api_plane.lifecycle.claim(job_id, "w1")
    api_plane.lifecycle.succeed(job_id, "w1", {"loss": -2.0}, listed)
    return job_id, files, folder


def test_artifact_list_and_download_with_digest_etag_and_range(alice, finished_job):
    job_id, files, _ = finished_job
    items = alice.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
    assert {(a["name"], a["size"]) for a in items} == {(n, len(d)) for n, d in files.items()}
    assert all(a["url"] == f"/v1/jobs/{job_id}/artifacts/{a['name']}" for a in items)

    data = files["encoder.safetensors"]
    digest = hashlib.sha256(data)
    r = alice.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors")
    assert r.status_code == 200 and r.content == data
    assert r.headers["repr-digest"] == f"sha-256=:{base64.b64encode(digest.digest()).decode()}:"
    assert r.headers["etag"] == f'"{digest.hexdigest()}"'
    assert r.headers["accept-ranges"] == "bytes"

    part = alice.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert part.headers["repr-digest"] == r.headers["repr-digest"]  # the whole representation's digest

    same = alice.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors", headers={"If-None-Match": r.headers["etag"]})
    assert same.status_code == 304 and same.content == b""


@pytest.mark.parametrize("range_, status", [("bytes=abc", 400), ("lines=1-2", 400), ("bytes=999999999-", 416)])
def test_bad_range_is_answered_in_the_json_error_model(alice, finished_job, range_, status):
    job_id, files, _ = finished_job
    r = alice.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors", headers={"Range": range_})
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert "Range" in r.json()["detail"]
    if status == 416:
        assert r.headers["content-range"] == f"bytes */{len(files['encoder.safetensors'])}"


def test_missing_artifact_is_404_json(alice, finished_job):
    job_id, _, _ = finished_job
    for name in ("nothing.bin", "..%2F..%2Fdcl.db"):
        r = alice.get(f"/v1/jobs/{job_id}/artifacts/{name}")
        assert r.status_code == 404 and r.json()["detail"]


def test_other_key_cannot_download_encoder(bob, finished_job):
    job_id, _, _ = finished_job
    r = bob.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors")
    assert r.status_code == 404 and r.json() == {"detail": f"job {job_id} not found"}


def test_damaged_artifact_is_never_served(alice, finished_job):
    job_id, files, folder = finished_job
    good = files["encoder.safetensors"]
    (folder / "encoder.safetensors").write_bytes(good[:-1] + b"\x00")  # same size, other bytes
    r = alice.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors")
    assert r.status_code == 409 and "sha256" in r.json()["detail"]
    (folder / "encoder.safetensors").write_bytes(good[:1000])  # truncated
    assert alice.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors").status_code == 409
    (folder / "encoder.safetensors").unlink()
    r = alice.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors")
    assert r.status_code == 409 and "missing" in r.json()["detail"]


@pytest.mark.slow
def test_event_stream_is_rejoined_after_the_api_restarts(tmp_path):
    """The API is killed mid-stream and started again on the same port and data: the
    client reconnects with Last-Event-ID and gets every later step once, then `end`."""
    from service.client import Client
    from service.control.settings import Settings
    from tests.fixtures.control import open_plane
    from tests.fixtures.servers import free_port, run_api_server

    data_dir, port = tmp_path / "data", free_port()
    data_dir.mkdir(parents=True)
    env = {"DCL_SSE_POLL_SECONDS": "0.05"}
    received: list = []
    with open_plane(Settings(data_dir=data_dir, lease_seconds=600)) as plane:  # the worker's side
        lifecycle = plane.lifecycle
        with run_api_server(data_dir, env=env, port=port) as first:
            job_id = first.client().post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()["id"]
            lifecycle.claim(job_id, "w1")
            lifecycle.progress(job_id, "w1", 20, total_steps=40, epoch=0.5,
                               rows=[{"step": s, "loss": -1.0} for s in (10, 20)])

            def follow():
                with Client(first.url) as client:
                    received.extend(client.events(job_id))

            follower = threading.Thread(target=follow)
            follower.start()
            deadline = time.monotonic() + 10
            while not any(e.event == "metrics" and e.data["step"] == 20 for e in received):
                assert time.monotonic() < deadline, received
                time.sleep(0.05)
            first.process.kill()  # a crash, not a clean stop
            first.process.wait()
        lifecycle.progress(job_id, "w1", 40, total_steps=40, epoch=1.0,
                           rows=[{"step": s, "loss": -2.0} for s in (30, 40)])
        lifecycle.succeed(job_id, "w1", {})
        with run_api_server(data_dir, env=env, port=port):
            follower.join(60)
        assert not follower.is_alive()
        assert [e.data["step"] for e in received if e.event == "metrics"] == [10, 20, 30, 40]
        assert received[-1].event == "end" and received[-1].data["status"] == "succeeded"
