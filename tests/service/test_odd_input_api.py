"""Odd values never reach the job store: NUL bytes and integers past the store's range are a
4xx naming the problem, on SQLite and on PostgreSQL (which refuses NUL in text)."""

from __future__ import annotations

import httpx
import pytest

from tests.service.conftest import ALICE, image_zip
from tests.service.databases import DATABASES, api_on

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=DATABASES)
def client(request, tmp_path_factory):
    with api_on(request.param, tmp_path_factory.mktemp("odd") / "data", keys=[ALICE]) as api, \
            api.client(ALICE) as c:
        yield c


@pytest.fixture(scope="module")
def job_id(client) -> str:
    r = client.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def refused(r: httpx.Response, status: tuple[int, ...] = (400, 422)) -> dict:
    assert r.status_code in status, (r.request.url, r.status_code, r.text)
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.mark.parametrize("path", [
    "/v1/jobs/job_%00x", "/v1/jobs/job_%00x/metrics", "/v1/jobs/job_%00x/events", "/v1/jobs/job_%00x/artifacts",
    "/v1/datasets/ds_%00x", "/v1/jobs/{job}/artifacts/enc%00oder.safetensors",
])
def test_nul_in_a_path_is_a_4xx(client, job_id, path):
    refused(client.get(path.format(job=job_id)))


def test_nul_in_a_query_parameter_or_a_cancel_is_a_4xx(client, job_id):
    refused(client.get("/v1/jobs", params={"status": "queued\x00"}))
    refused(client.post("/v1/jobs/job_%00x/cancel"))
    refused(client.delete("/v1/datasets/ds_%00x"))
    refused(client.post("/v1/datasets", params={"filename": "a\x00.zip"}, content=b"PK"))


@pytest.mark.parametrize("body, field", [
    ({"type": "linear_probe", "encoder_job": "job_\x00", "train": "builtin:digits", "test": "builtin:digits"},
     "encoder_job"),
    ({"type": "embed", "encoder_job": "job_\x00", "data": "builtin:digits"}, "encoder_job"),
    ({"type": "pretrain", "config": {"dataset": "dataset:ds_\x00"}}, "config.dataset.source"),
    ({"type": "pretrain", "config": {"device": "cpu\x00"}}, "config.device"),
])
def test_nul_in_a_job_body_is_422_naming_the_field(client, body, field):
    assert refused(client.post("/v1/jobs", json=body), (422,))["errors"][0]["field"] == field


def multipart(name: str, filename: str, data: bytes, boundary: str = "b0undary") -> tuple[bytes, dict]:
    """A multipart body written by hand: httpx percent-encodes a NUL in a file name."""
    raw = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
           "Content-Type: application/zip\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return raw, {"content-type": f"multipart/form-data; boundary={boundary}"}


def test_nul_in_upload_names_is_a_4xx(client, tmp_path):
    data = image_zip(tmp_path / "pets.zip").read_bytes()
    for name, filename in (("file", "pets\x00.zip"), ("fi\x00le", "pets.zip")):
        raw, headers = multipart(name, filename, data)
        refused(client.post("/v1/datasets", content=raw, headers=headers))
    refused(client.post("/v1/datasets", files={"file": ("pets.zip", data)}, data={"name": "my\x00pets"}))
    ok = client.post("/v1/datasets", files={"file": ("pets.zip", data)}, data={"name": "pets"})
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("path, params", [
    ("/v1/jobs", {"offset": 2**64}), ("/v1/datasets", {"offset": 2**64}), ("/v1/jobs", {"offset": 2**31}),
    ("/v1/jobs/{job}/metrics", {"since": 2**31}), ("/v1/jobs/{job}/events", {"since": 2**31}),
    ("/v1/jobs/{job}/metrics", {"since": 10**30}),
])
def test_integers_past_the_stores_range_are_422(client, job_id, path, params):
    body = refused(client.get(path.format(job=job_id), params=params), (422,))
    assert body["errors"][0]["field"] in ("query.offset", "query.since")


def test_last_event_id_past_the_stores_range_is_refused_before_the_stream_starts(client, job_id):
    r = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(2**31)})
    assert "Last-Event-ID" in refused(r, (422,))["detail"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(2**31 - 1)},
                       params={"since": 2**31 - 1}) as stream:
        assert stream.status_code == 200
        lines = []
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith("event: status"):
                break
    assert "event: status" in lines


def test_prometheus_metrics_ignores_query_parameters(client):
    assert client.get("/metrics", params={"since": 2**31}).status_code == 200
