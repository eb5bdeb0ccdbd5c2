"""Long metric series thinned for plotting (`max_points`): spikes and rare metrics survive, the
whole range is covered, and short series come back untouched."""

from __future__ import annotations

import math

import pytest

from service.control.metrics import thin as thin_tuples
from service.control.settings import hash_key
from tests.fixtures.control import submit
from tests.service.conftest import ALICE, BOB


def thin(rows, first, last, buckets):
    return thin_tuples(((r["step"], r["attempt"], {k: v for k, v in r.items() if k not in ("step", "attempt")})
                        for r in rows), first, last, buckets)


def rows(n: int, spike_at: int | None = None) -> list[dict]:
    out = []
    for step in range(1, n + 1):
        row = {"step": step, "attempt": 1, "loss": 2.0 - step / n + 0.01 * math.sin(step), "lr": 0.1 * (1 - step / n)}
        if step == spike_at:
            row["loss"] = 50.0
        if step % 1000 == 0:
            row["knn_top1"] = step / n
        out.append(row)
    return out


def test_thin_keeps_a_one_step_spike_and_every_rare_metric():
    series = rows(100_000, spike_at=43_210)
    kept = thin(iter(series), 1, 100_000, buckets=250)
    steps = [r["step"] for r in kept]
    assert steps == sorted(set(steps))
    assert 250 <= len(kept) <= 250 * 2 * 3  # at most a min and a max row per metric per bucket
    assert max(r["loss"] for r in kept) == 50.0
    assert [r["step"] for r in kept if "knn_top1" in r] == list(range(1000, 100_001, 1000))
    assert kept[-1] == series[-1]  # the last row is always there
    assert all(r in series for r in kept[:50])  # whole rows, unchanged


def test_thin_keeps_each_buckets_min_and_max():
    series = [{"step": s, "attempt": 1, "loss": v} for s, v in enumerate([5, 1, 3, 9, 2, 8, 4, 7], start=1)]
    kept = thin(iter(series), 1, 8, buckets=2)
    assert [r["step"] for r in kept] == [2, 4, 5, 6, 8]  # (1, 9) of steps 1-4, (2, 8) of 5-8, and the last


@pytest.fixture
def long_job(api_plane):
    job = submit(api_plane, "key_" + hash_key(ALICE)[:12], {"type": "pretrain"})
    api_plane.lifecycle.claim(job.id, "w1")
    series = rows(20_000, spike_at=12_345)
    for start in range(0, len(series), 5000):
        api_plane.lifecycle.progress(job.id, "w1", start + 5000, rows=[dict(r) for r in series[start:start + 5000]])
    return job.id


def test_metrics_endpoint_thins_with_max_points(alice, long_job):
    r = alice.get(f"/v1/jobs/{long_job}/metrics", params={"max_points": 400})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["thinned"] is True
    items = body["items"]
    assert len(items) <= 400 * 2
    assert max(i["loss"] for i in items) == 50.0
    assert body["next_since"] == 20_000 == items[-1]["step"]
    assert len([i for i in items if "knn_top1" in i]) == 20

    # After `since`, only the newer part; a short remainder comes back whole.
    tail = alice.get(f"/v1/jobs/{long_job}/metrics", params={"max_points": 400, "since": 19_900}).json()
    assert tail["thinned"] is False and [i["step"] for i in tail["items"]] == list(range(19_901, 20_001))


def test_metrics_max_points_is_bounded_and_owned(alice, bob, long_job):
    assert alice.get(f"/v1/jobs/{long_job}/metrics", params={"max_points": 1}).status_code == 422
    assert alice.get(f"/v1/jobs/{long_job}/metrics", params={"max_points": 10**6}).status_code == 422
    assert bob.get(f"/v1/jobs/{long_job}/metrics", params={"max_points": 400}).status_code == 404


def test_thinning_reads_the_store_on_sqlite_and_postgres(plane):
    job = submit(plane, "owner", {"type": "pretrain"})
    plane.lifecycle.claim(job.id, "w1")
    plane.lifecycle.progress(job.id, "w1", 3000, rows=[dict(r) for r in rows(3000, spike_at=1234)])
    kept, thinned = plane.metrics.thinned(job.id, 0, 100)
    assert thinned and max(r["loss"] for r in kept) == 50.0 and kept[-1]["step"] == 3000
    assert plane.metrics.thinned(job.id, 2990, 100) == (plane.metrics.since(job.id, since_step=2990), False)
