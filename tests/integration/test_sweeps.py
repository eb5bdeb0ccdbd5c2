"""Sweeps end to end: the real API, a real worker (embedded SQLite broker and store: one
worker process, so the sweep itself must never hold a worker slot), real HTTP, and the CLI."""

from __future__ import annotations

import csv
import io
import json

import pytest

from dcl_core.cli import main
from tests.integration.helpers import service_stack, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(300)]

DIGITS_8PX = {"source": "builtin:digits", "image_size": 8}
BASE = {"encoder": "convnet_small", "dataset": {**DIGITS_8PX, "max_images": 64}, "epochs": 1, "max_steps": 2,
        "projection_hidden_dim": 32, "projection_dim": 16, "device": "cpu", "log_every_steps": 1}
EVALUATE = {"train": {**DIGITS_8PX, "max_images": 200}, "test": {**DIGITS_8PX, "split": "test", "max_images": 100},
            "classifier": "knn"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # Members wait their turn behind the one worker: with the usual 4 s of the fault tests the
    # reconciler would keep re-sending them as if their messages were lost.
    env = {"DCL_REQUEUE_AFTER_SECONDS": "300"}
    with service_stack("sqlite", tmp_path_factory.mktemp("sweeps"), env=env) as services:
        yield services
        print(services.logs())  # shown only when a test failed


def sweep(grid: dict, **base) -> dict:
    return {"type": "sweep", "config": {**BASE, **base}, "grid": grid, "evaluate": EVALUATE}


def test_sweep_of_two_methods_and_two_batch_sizes_ends_with_its_table_and_plot(stack, tmp_path, capsys):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep({"method": ["dcl", "simclr"], "batch_size": [16, 32]})))
    code = main(["submit", str(path), "--wait", "--url", stack.api.url])
    out = capsys.readouterr()
    assert code == 0, out.err + stack.logs()
    sweep_id = out.out.splitlines()[0].strip()
    assert "jobs 4/4 done: 4 succeeded" in out.out

    with stack.client() as client:
        parent = client.get(f"/v1/jobs/{sweep_id}").json()
        assert parent["type"] == "sweep" and parent["status"] == "succeeded", parent
        assert parent["children"] == {"total": 4, "queued": 0, "running": 0, "succeeded": 4, "failed": 0,
                                      "cancelled": 0}
        assert parent["progress"]["fraction"] == 1.0 and parent["progress"]["step"] == 4 * 2
        members = client.get("/v1/jobs", params={"parent": sweep_id}).json()
        assert members["total"] == 4
        assert {m["parent"] for m in members["items"]} == {sweep_id}
        assert {m["type"] for m in members["items"]} == {"pretrain"}

        result = parent["result"]
        assert result["swept"] == ["method", "batch_size"]
        assert [r["params"] for r in result["rows"]] == [
            {"method": m, "batch_size": b} for m in ("dcl", "simclr") for b in (16, 32)]
        for row in result["rows"]:
            assert row["status"] == "succeeded" and row["error"] is None
            assert set(row["scores"]) == {"knn_top1", "recall_at_1", "recall_at_5", "recall_at_10", "map_at_r"}  # the retrieval scores too
            assert all(0.0 <= v <= 1.0 for v in row["scores"].values())
        assert [s["n"] for s in result["summary"]] == [1, 1, 1, 1]
        assert all(s["std"] == {name: 0.0 for name in row["scores"]} for s in result["summary"])

        child = members["items"][0]
        assert child["result"]["scores"]["knn_top1"] == child["result"]["evaluation"]["knn"]["accuracy"]
        assert child["result"]["evaluation"]["retrieval"]["queries"] > 0
        meta = client.get(f"/v1/jobs/{child['id']}/artifacts/encoder.json").json()
        assert meta["scores"] == child["result"]["scores"]

        names = {a["name"] for a in client.get(f"/v1/jobs/{sweep_id}/artifacts").json()["items"]}
        assert {"results.csv", "results.json", "accuracy.png"} <= names
        assert client.get(f"/v1/jobs/{sweep_id}/artifacts/results.json").json() == result
        table = list(csv.DictReader(io.StringIO(client.get(f"/v1/jobs/{sweep_id}/artifacts/results.csv").text)))
        assert [(r["method"], r["batch_size"]) for r in table] == [("dcl", "16"), ("dcl", "32"), ("simclr", "16"),
                                                                   ("simclr", "32")]
        assert client.get(f"/v1/jobs/{sweep_id}/artifacts/accuracy.png").content.startswith(b"\x89PNG")

        # Delete cascades: the sweep, its members and their artifacts go.
        assert client.delete(f"/v1/jobs/{sweep_id}").status_code == 204
        assert client.get(f"/v1/jobs/{child['id']}").status_code == 404
        assert not (stack.data_dir / "artifacts" / child["id"]).exists()


def test_a_bad_grid_point_is_a_422_naming_it_and_queues_nothing(stack):
    with stack.client() as client:
        before = client.get("/v1/jobs").json()["total"]
        r = client.post("/v1/jobs", json=sweep({"method": ["dcl", "simclr"], "batch_size": [16, 1]}))
        assert r.status_code == 422, r.text
        assert 'grid point {"method": "dcl", "batch_size": 1}' in r.json()["detail"]
        assert r.json()["detail"].startswith("grid:")
        r = client.post("/v1/jobs", json=sweep({"batch_size": [16, 128]}))  # 64 images: too few for 128
        assert r.status_code == 422 and r.json()["detail"].startswith('grid: grid point {"batch_size": 128}: config.batch_size')
        r = client.post("/v1/jobs", json=sweep({"augment.crop_scal": [[0.2, 1.0]]}))
        assert r.status_code == 422 and "crop_scale" in r.json()["detail"]
        # Nine members would pass the key's cap of 8 active jobs: refused up front.
        r = client.post("/v1/jobs", json=sweep({"seed": list(range(9))}, batch_size=16))
        assert r.status_code == 429 and "9 more jobs" in r.json()["detail"]
        assert client.get("/v1/jobs").json()["total"] == before


def test_cancel_cascades_to_members_and_retry_resumes_them(stack):
    endless = {"epochs": 10000, "max_steps": None, "batch_size": 16, "checkpoint_every_steps": 4, "log_every_steps": 2}
    with stack.client() as client:
        r = client.post("/v1/jobs", json=sweep({"method": ["dcl", "simclr"]}, **endless))
        assert r.status_code == 202, r.text
        sweep_id = r.json()["id"]
        assert r.json()["children"]["total"] == 2 and r.json()["status"] == "running"
        wait_job(client, sweep_id, statuses=("running",), timeout_s=120,
                 until=lambda j: j["children"]["running"] == 1 and j["progress"]["step"] >= 4)
        cancelled = client.post(f"/v1/jobs/{sweep_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["cancel_requested"]
        parent = wait_job(client, sweep_id, timeout_s=120)
        assert parent["status"] == "cancelled", parent
        members = client.get("/v1/jobs", params={"parent": sweep_id}).json()["items"]
        assert {m["status"] for m in members} == {"cancelled"}
        assert {r["status"] for r in parent["result"]["rows"]} == {"cancelled"}
        stopped = next(m for m in members if m["progress"]["step"] > 0)
        assert "checkpoint.pt" in {a["name"] for a in client.get(f"/v1/jobs/{stopped['id']}/artifacts").json()["items"]}

        # Retry the stopped member: it resumes from its checkpoint, and its sweep runs again.
        retried = client.post(f"/v1/jobs/{stopped['id']}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "queued" and retried.json()["parent"] == sweep_id
        reopened = client.get(f"/v1/jobs/{sweep_id}").json()
        assert reopened["status"] == "running" and reopened["children"]["queued"] == 1
        resumed = wait_job(client, stopped["id"], statuses=("running",), timeout_s=120,
                           until=lambda j: j["attempts"] == 2)
        assert resumed["progress"]["step"] >= stopped["progress"]["step"]
        assert client.post(f"/v1/jobs/{sweep_id}/cancel").status_code == 200
        assert wait_job(client, sweep_id, timeout_s=120)["status"] == "cancelled"
        assert client.post(f"/v1/jobs/{sweep_id}/cancel").status_code == 409


def test_a_failed_member_fails_its_row_not_the_sweep_and_can_be_retried(stack):
    with stack.client() as client:
        # The second member would train for hours: it runs out of its 20 s run time.
        r = client.post("/v1/jobs", json=sweep({"max_steps": [2, 1_000_000]}, batch_size=16, epochs=100_000,
                                               max_runtime_s=20))
        assert r.status_code == 202, r.text
        sweep_id = r.json()["id"]
        parent = wait_job(client, sweep_id, timeout_s=120)
        assert parent["status"] == "succeeded"
        good, bad = parent["result"]["rows"]
        assert good["status"] == "succeeded" and good["scores"]
        assert bad["status"] == "failed" and "max_runtime_s" in bad["error"] and bad["scores"] == {}
        assert parent["result"]["summary"][1]["n"] == 0

        retried = client.post(f"/v1/jobs/{sweep_id}/retry")  # a sweep's retry: its failed members
        assert retried.status_code == 200 and retried.json()["children"]["succeeded"] == 1
        assert retried.json()["children"]["failed"] == 0
        again = wait_job(client, bad["job_id"], timeout_s=120)
        assert again["status"] == "failed" and again["attempts"] == 2
        parent = wait_job(client, sweep_id, timeout_s=60)
        assert parent["status"] == "succeeded" and parent["finished_at"] >= again["finished_at"]
        assert client.post(f"/v1/jobs/{good['job_id']}/retry").status_code == 409
