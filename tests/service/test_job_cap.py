"""The per-key active-jobs cap holds under parallel submits (counted and inserted at once)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from service.control.lifecycle import CapReached
from tests.fixtures.control import submit
from tests.service.conftest import ALICE, BOB
from tests.service.databases import DATABASES, api_on

pytestmark = pytest.mark.integration

CAP = 8
JOB = {"type": "pretrain", "config": {"epochs": 1}}


def sweep(n: int) -> dict:
    return {"type": "sweep", "config": {"epochs": 1}, "grid": {"seed": list(range(n))}}


def submitted(plane, owner: str, spec: dict, max_active: int) -> bool:
    try:
        submit(plane, owner, spec, max_active=max_active)
        return True
    except CapReached:
        return False


def test_store_cap_counts_what_a_request_adds(plane):
    for _ in range(3):
        assert submitted(plane, "alice", JOB, max_active=4)
    assert not submitted(plane, "alice", sweep(2), max_active=4)  # a sweep of two adds two
    assert submitted(plane, "bob", sweep(2), max_active=4)
    assert submitted(plane, "alice", JOB, max_active=4)
    assert not submitted(plane, "alice", JOB, max_active=4)
    assert plane.jobs.count_active("alice") == 4


def test_store_cap_holds_for_parallel_inserts(plane):
    with ThreadPoolExecutor(16) as pool:
        made = list(pool.map(lambda _: submitted(plane, "alice", JOB, max_active=CAP), range(40)))
    assert sum(made) == CAP
    assert plane.jobs.count_active("alice") == CAP


@pytest.mark.parametrize("database", DATABASES)
def test_parallel_submits_over_http_never_pass_the_cap(database, tmp_path):
    env = {"DCL_MAX_ACTIVE_JOBS_PER_KEY": str(CAP)}
    with api_on(database, tmp_path / "data", keys=[ALICE, BOB], env=env) as api:
        def submit(key: str) -> httpx.Response:
            with api.client(key) as c:
                return c.post("/v1/jobs", json=JOB)

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(submit, [ALICE] * 40 + [BOB] * 4))
        alice, bob = answers[:40], answers[40:]
        assert sorted({r.status_code for r in alice}) == [202, 429], [r.text for r in alice]
        assert sum(r.status_code == 202 for r in alice) == CAP
        refused = next(r for r in alice if r.status_code == 429)
        assert "limit is 8" in refused.json()["detail"] and refused.headers["retry-after"]
        assert all(r.status_code == 202 for r in bob)
        with api.client(ALICE) as c:
            assert c.get("/v1/jobs", params={"status": "queued"}).json()["total"] == CAP
