"""Property tests of the API over real HTTP (uvicorn, SQLite and PostgreSQL): never a 5xx,
and every answer as the OpenAPI document describes it (status, content type, body schema).

Schemathesis generates requests from the live /openapi.json, valid and invalid, headers and
query parameters included; hypothesis adds job bodies and ids aimed at known weak spots (NaN,
huge integers, NUL bytes). `make test` runs a few examples per operation; `make fuzz` runs many
(DCL_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dcl_core.config import TrainConfig
from dcl_core.jobs import JOB_TYPES
from tests.service.conftest import ALICE, CAROL
from tests.service.databases import DATABASES, api_on

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("DCL_FUZZ_EXAMPLES", "4"))
"""Per operation and mode for schemathesis; five times as many for each hand-written property."""
FUZZ = settings(max_examples=5 * EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module", params=DATABASES)
def live_api(request, tmp_path_factory):
    # A small upload cap and a job cap, so the fuzzer meets 413 and 429 too.
    env = {"DCL_MAX_UPLOAD_BYTES": "200000", "DCL_MAX_ACTIVE_JOBS_PER_KEY": "20"}
    with api_on(request.param, tmp_path_factory.mktemp("fuzz") / "data", keys=[ALICE], env=env) as api:
        yield api


def test_api_answers_as_its_schema_says(live_api):
    """Every operation of the live schema, with valid and invalid requests (schemathesis'
    pytest loader does not run under pytest 9, so the operations are walked here)."""
    schema = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")
    schema.config.generation.update(allow_x00=True)
    auth = {"Authorization": f"Bearer {ALICE}"}
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                if operation.path == "/v1/jobs/{job_id}/events":
                    case.headers = {**(case.headers or {}), "Last-Event-ID": "0"}
                case.call_and_validate(base_url=live_api.url, headers=auth, checks=CHECKS, timeout=30)

            try:
                check()
            except Unsatisfiable:  # no parameters or body to make invalid (GET /healthz)
                assert mode is GenerationMode.NEGATIVE
            except Exception as exc:  # noqa: BLE001 - gathered, so one run reports every operation
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)


# ---- hand-written strategies: known weak spots ------------------------------------------

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
    assert r.status_code in (307, 400, 404, 405, 422)  # 307: an id of "/" is a trailing slash


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["status", "type", "limit", "offset", "since", "parent"]),
                              st.text(max_size=12) | st.integers(-5, 2**70).map(str), max_size=4),
       last_event_id=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=24)
       | st.integers(0, 2**70).map(str))
def test_random_query_parameters_and_headers_never_5xx(carol, params, last_event_id):
    assert_clean(carol.get("/v1/jobs", params=params))
    assert_clean(carol.get("/v1/datasets", params=params))
    job = carol.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()["id"]
    carol.post(f"/v1/jobs/{job}/cancel")  # ended: its event stream answers and closes
    assert_clean(carol.get(f"/v1/jobs/{job}/metrics", params=params))
    with carol.stream("GET", f"/v1/jobs/{job}/events", params=params,
                      headers={"Last-Event-ID": last_event_id.strip() or "0"}) as r:
        if r.status_code >= 400:
            r.read()
            assert_clean(r)


@FUZZ
@given(name=st.text(max_size=40), data=st.binary(max_size=2000),
       content_type=st.sampled_from(["application/zip", "application/octet-stream", "text/plain"]))
def test_random_uploads_never_5xx(carol, name, data, content_type):
    r = carol.post("/v1/datasets", files={"file": (name or "x", data, content_type)})
    assert_clean(r)
    assert r.status_code != 201 or r.json()["summary"]["num_images"] > 0
