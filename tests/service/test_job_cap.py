"""The per-key active-jobs cap holds under parallel submits (counted and inserted at once)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.service.conftest import ALICE, BOB
from tests.service.databases import DATABASES, api_on

pytestmark = pytest.mark.integration

CAP = 8
JOB = {"type": "pretrain", "config": {"epochs": 1}}


def test_store_cap_counts_what_a_request_adds(store):
    for _ in range(3):
        assert store.create_job("alice", "pretrain", JOB, max_active=4) is not None
    assert store.create_job("alice", "pretrain", JOB, max_active=4, adds=2) is None
    assert store.create_job("bob", "pretrain", JOB, max_active=4, adds=2) is not None
    assert store.create_job("alice", "pretrain", JOB, max_active=4) is not None
    assert store.create_job("alice", "pretrain", JOB, max_active=4) is None
    assert store.count_active("alice") == 4


def test_store_cap_holds_for_parallel_inserts(store):
    with ThreadPoolExecutor(16) as pool:
        made = list(pool.map(lambda _: store.create_job("alice", "pretrain", JOB, max_active=CAP), range(40)))
    assert sum(job is not None for job in made) == CAP
    assert store.count_active("alice") == CAP


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
