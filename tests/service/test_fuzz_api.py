"""Hypothesis drives random requests at the real API: never a 5xx, every error a JSON body
with a message."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcl_core.config import TrainConfig
from dcl_core.jobtypes import JOB_TYPES
from tests.service.conftest import CAROL

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
config_keys = st.sampled_from(sorted(TrainConfig.model_fields) + ["bogus"])
configs = st.dictionaries(config_keys, json_values | st.sampled_from(
    ["builtin:digits", "torchvision:CIFAR10", "dataset:ds_0123456789abcdef", "/etc/passwd", "dataset:x"]
), max_size=6)
job_bodies = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(sorted(JOB_TYPES)) | st.text(max_size=12),
                           "config": configs}),
    st.fixed_dictionaries({"type": st.just("sweep"), "config": configs,
                           "grid": st.dictionaries(config_keys | st.sampled_from(["augment.crop_scale", "dataset.x", "a.b"]),
                                                   st.lists(json_values, max_size=3), max_size=3)}),
    st.fixed_dictionaries({"type": st.sampled_from(["linear_probe", "embed"]),
                           "encoder_job": st.text(max_size=70), "train": json_values, "test": json_values,
                           "data": json_values}),
    json_values,
)


@pytest.fixture(scope="module")
def carol(api):
    with api.client(CAROL) as c:
        yield c


def assert_clean(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.request.method, r.request.url, r.text)
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body["detail"], str) and body["detail"], body


@FUZZ
@given(body=job_bodies)
def test_random_job_submissions_never_5xx(carol, body):
    # json.dumps lets NaN and Infinity through, as a careless client would send them.
    r = carol.post("/v1/jobs", content=json.dumps(body), headers={"content-type": "application/json"})
    assert_clean(r)
    if r.status_code == 202:
        carol.post(f"/v1/jobs/{r.json()['id']}/cancel")


@FUZZ
@given(job_id=st.text(min_size=1, max_size=80), sub=st.sampled_from(
    ["", "/metrics", "/events", "/artifacts", "/artifacts/encoder.safetensors", "/cancel", "/retry"]))
def test_random_job_ids_are_404_not_5xx(carol, job_id, sub):
    method = "POST" if sub == "/cancel" else "GET"
    r = carol.request(method, f"/v1/jobs/{quote(job_id, safe='')}{sub}")
    assert_clean(r)
    assert r.status_code in (307, 404, 405, 422)  # 307: an id of "/" is a trailing slash


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["status", "type", "limit", "offset", "since", "parent"]),
                              st.text(max_size=12) | st.integers(-5, 10**12).map(str), max_size=4))
def test_random_query_parameters_never_5xx(carol, params):
    assert_clean(carol.get("/v1/jobs", params=params))
    assert_clean(carol.get("/v1/datasets", params=params))


@FUZZ
@given(name=st.text(max_size=40), data=st.binary(max_size=2000),
       content_type=st.sampled_from(["application/zip", "application/octet-stream", "text/plain"]))
def test_random_uploads_never_5xx(carol, name, data, content_type):
    r = carol.post("/v1/datasets", files={"file": (name or "x", data, content_type)})
    assert_clean(r)
    assert r.status_code != 201 or r.json()["summary"]["num_images"] > 0
