"""/healthz, /readyz and /metrics, with the embedded broker, a real Redis, and no broker."""

from __future__ import annotations

import pytest

from service.control.settings import Settings
from tests.fixtures.control import open_plane
from tests.fixtures.servers import free_port, run_api_server
from tests.service.conftest import ALICE, BOB, OPERATOR

pytestmark = pytest.mark.integration


def test_healthz_readyz_and_metrics(alice, api, api_plane):
    with api.client() as anonymous, api.client(OPERATOR) as operator:
        assert anonymous.get("/healthz").json() == {"status": "ok"}  # no key needed
        ready = anonymous.get("/readyz")  # the verdict needs no key either (load balancers)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready" and body["database"]["ok"] and body["broker"]["ok"]
        api_plane.workers.seen("gpu0@box", {"queues": "gpu,cpu"})
        workers = operator.get("/readyz").json()["workers"]
        assert workers["count"] >= 1 and "gpu0@box" in [w["name"] for w in workers["items"]]

        alice.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}})
        text = operator.get("/metrics").text
    assert 'dcl_jobs{status="queued"}' in text
    assert 'dcl_queue_depth{queue="gpu"}' in text and "dcl_broker_up 1.0" in text
    assert 'dcl_http_request_duration_seconds_bucket{le="0.1",method="POST",route="/v1/jobs",status="202"}' in text
    assert "dcl_workers_seen" in text


@pytest.fixture
def auth_api(tmp_path):
    """An API with two keys and an operator key, its control plane opened as a worker would."""
    with run_api_server(tmp_path / "data", keys=[ALICE, BOB], env={"DCL_OPERATOR_KEYS": OPERATOR}) as server, \
            open_plane(Settings(data_dir=server.data_dir)) as plane:
        yield server, plane


def test_with_auth_on_readyz_and_metrics_show_each_key_only_what_it_may_see(auth_api):
    server, plane = auth_api
    with server.client() as anonymous, server.client(ALICE) as alice, server.client(BOB) as bob, \
            server.client(OPERATOR) as operator:
        jobs = {c: [c.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()["id"]
                    for _ in range(n)] for c, n in ((alice, 2), (bob, 3))}
        # One worker whose two pool processes each hold a job: one worker, not three.
        plane.workers.seen("dcl-7@gpubox", {"pid": 7, "queues": "gpu"})
        for pid, job in zip((101, 102), jobs[alice]):
            assert plane.lifecycle.claim(job, f"dcl-7@gpubox/{pid}").status == "running"
        full = operator.get("/readyz").json()["workers"]
        assert full["count"] == 1 and full["items"][0]["name"] == "dcl-7@gpubox"
        assert sorted(full["items"][0]["jobs"]) == sorted(jobs[alice]) and full["items"][0]["info"]["pid"] == 7
        for client in (anonymous, alice):
            r = client.get("/readyz")
            assert r.status_code == 200 and r.json()["workers"]["count"] == 1
            assert "gpubox" not in r.text and jobs[alice][0] not in r.text

        r = anonymous.get("/metrics")
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert 'dcl_jobs{status="running"} 2.0' in alice.get("/metrics").text
        bobs = bob.get("/metrics").text
        assert 'dcl_jobs{status="queued"} 3.0' in bobs and 'dcl_jobs{status="running"} 0.0' in bobs
        text = operator.get("/metrics").text
        assert 'dcl_jobs{status="queued"} 3.0' in text and 'dcl_jobs{status="running"} 2.0' in text
        assert "dcl_http_request_duration_seconds" in text


def test_redis_broker_counts_queued_messages(tmp_path, redis_server):
    with run_api_server(tmp_path / "data", env={"DCL_BROKER_URL": redis_server}) as server, server.client() as c:
        assert c.get("/readyz").json()["broker"]["ok"]
        for _ in range(3):
            assert c.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).status_code == 202
        cpu = c.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1, "device": "cpu"}})
        assert cpu.status_code == 202
        text = c.get("/metrics").text
    assert 'dcl_queue_depth{queue="gpu"} 3.0' in text
    assert 'dcl_queue_depth{queue="cpu"} 1.0' in text


def test_unreachable_broker_is_not_ready_but_jobs_are_still_recorded(tmp_path):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with run_api_server(tmp_path / "data", env={"DCL_BROKER_URL": dead}) as server, server.client() as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["database"]["ok"] and not body["broker"]["ok"] and "broker" in body["detail"]
        assert c.get("/healthz").status_code == 200
        # The job store is the truth: the job is kept as queued and the reconciler sends it later.
        job = c.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}})
        assert job.status_code == 202 and job.json()["status"] == "queued"
        assert "dcl_broker_up 0.0" in c.get("/metrics").text
