"""`dcl datasets` and `dcl metrics`, against a real API over HTTP."""

from __future__ import annotations

import json

import pytest

from tests.service.conftest import BOB, image_zip
from tests.service.test_cli import dcl  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration


def test_datasets_lists_my_uploads_only(dcl, tmp_path):  # noqa: F811
    code, out, _ = dcl("upload", str(image_zip(tmp_path / "pets.zip")), "--name", "pets")
    dataset_id = out.strip()
    code, out, err = dcl("datasets")
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "NAME", "IMAGES", "CLASSES", "SIZE", "CREATED"]
    line = next(line for line in out.splitlines() if line.startswith(dataset_id))
    assert line.split()[:4] == [dataset_id, "pets", "6", "2"]
    code, out, _ = dcl("datasets", "--json")
    assert dataset_id in {d["id"] for d in json.loads(out)["items"]}
    code, out, _ = dcl("datasets", key=BOB)
    assert code == 0 and dataset_id not in out


def test_metrics_prints_every_row_of_the_series(dcl, alice, api_plane):  # noqa: F811
    job_id = alice.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()["id"]
    api_plane.lifecycle.claim(job_id, "w1")
    rows = [{"step": s, "loss": -s / 1000, "lr": 0.1} for s in range(1, 1206)]  # more than one page (1000)
    api_plane.lifecycle.progress(job_id, "w1", 1205, total_steps=1205, epoch=1.0, rows=rows)
    code, out, _ = dcl("metrics", job_id)
    assert code == 0
    lines = out.splitlines()
    header = lines[0].split()  # an aligned table: one column a metric
    assert {"step", "loss", "lr"} <= set(header) and len(lines) == 1 + 1205
    assert len({len(line) for line in lines}) == 1  # every row as wide as the header
    last = dict(zip(header, lines[-1].split()))
    assert last["step"] == "1205" and float(last["loss"]) == pytest.approx(-1.205)
    code, out, _ = dcl("metrics", job_id, "--json")
    assert [json.loads(line)["step"] for line in out.splitlines()] == list(range(1, 1206))


def test_metrics_of_someone_elses_job_is_not_found(dcl, alice):  # noqa: F811
    job_id = alice.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()["id"]
    code, _, err = dcl("metrics", job_id, key=BOB)
    assert code == 2 and "not found" in err
