"""The `dcl` commands a new user meets first: where they look for the service, how quickly they
start, what they print (aligned tables, short summaries), `dcl delete` and `dcl artifacts`, and
"did you mean" for a misspelt config field, from the CLI and from the API."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from dcl_core.cli import command_entry_points, main, probe_summary
from dcl_core.jobs import JOB_TYPES
from service.cli import job_type_names
from service.cli_output import summary_line, table
from service.client import default_url
from service.control.models import ArtifactFile
from tests.fixtures.servers import REPO_ROOT, dcl_env, free_port, stop_process, wait_for_port
from tests.service.conftest import BOB
from tests.service.test_cli import dcl  # noqa: F401  (the fixture)


def test_the_url_comes_from_dcl_url_then_dcl_port(monkeypatch):
    monkeypatch.delenv("DCL_URL", raising=False)
    monkeypatch.delenv("DCL_PORT", raising=False)
    assert default_url() == "http://127.0.0.1:8000"
    monkeypatch.setenv("DCL_PORT", "8790")
    assert default_url() == "http://127.0.0.1:8790"
    monkeypatch.setenv("DCL_URL", "http://gpu-box:9000")
    assert default_url() == "http://gpu-box:9000"


def test_an_unreachable_service_is_named_with_its_port(monkeypatch, capsys):
    monkeypatch.delenv("DCL_URL", raising=False)
    port = free_port()
    monkeypatch.setenv("DCL_PORT", str(port))
    assert main(["jobs"]) == 2
    assert f"cannot reach the service at http://127.0.0.1:{port}" in capsys.readouterr().err


def test_the_commands_are_found_as_importlib_metadata_finds_them():
    from importlib.metadata import entry_points

    assert command_entry_points() == [ep.value for ep in entry_points(group="dcl.commands")]


def test_job_type_names_are_read_without_importing_the_types():
    assert job_type_names() == sorted(JOB_TYPES)


def test_a_client_command_imports_no_model_or_web_framework():
    """What makes `dcl jobs` slow to start is what it imports: not the job types' pydantic models,
    pydantic itself, FastAPI, torch, nor httpx's own command line (rich, click)."""
    code = ("import sys, dcl_core.cli as c\n"
            "try:\n    c.main(['jobs', '--url', 'http://127.0.0.1:9'])\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(k for k, v in sys.modules.items() if v is not None)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.split())
    assert "service.client" in loaded  # it did run the command
    heavy = {"dcl_core.jobs", "dcl_core.config", "pydantic", "fastapi", "torch", "numpy", "rich", "click", "httpx._main",
             "importlib.metadata"}
    assert heavy & loaded == set()


@pytest.mark.integration
def test_serve_on_another_port_prints_the_export_line(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dcl_core.cli", "serve", "--port", str(port), "--no-embedded"],
                                cwd=REPO_ROOT, env=dcl_env(tmp_path / "data"), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 60, proc, log)
    finally:
        stop_process(proc)
    assert f"export DCL_URL=http://127.0.0.1:{port}" in log.read_text()


def test_tables_align_their_columns():
    text = table(["NAME", "SIZE"], [["encoder.safetensors", "1.2 MiB"], ["encoder.json", "900 B"]], right={1})
    lines = text.splitlines()
    assert lines == ["NAME                    SIZE", "encoder.safetensors  1.2 MiB", "encoder.json           900 B"]


def test_one_seed_has_no_spread_to_show():
    one = {"params": {"method": "dcl"}, "n": 1, "mean": {"linear_top1": 0.9}, "std": {"linear_top1": 0.0}}
    assert summary_line(one) == 'method="dcl"  n=1  linear_top1 90.0 %'
    two = {**one, "n": 2, "std": {"linear_top1": 0.012}}
    assert summary_line(two) == 'method="dcl"  n=2  linear_top1 90.0 ± 1.2 %'


def test_probe_prints_a_short_summary():
    result = {"classifier": "logistic", "accuracy": 0.912, "num_train": 1437, "num_test": 360, "seconds": 3.21,
              "classes": ["0", "1", "2", "3"], "per_class_accuracy": [0.99, 0.8, None, 0.95]}
    text = probe_summary(result)
    assert text.splitlines() == ["logistic probe: top-1 91.2% on 360 test images (1437 train, 4 classes) in 3.2 s",
                                 "weakest classes: 1 80%, 3 95%, 0 99%; best: 0 99%"]


def test_a_misspelt_field_is_answered_with_the_close_names(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"bach_size": 8, "augment": {"crop_scal": [0.2, 1.0]}}))
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "bach_size: unknown field 'bach_size': did you mean 'batch_size'?" in err
    assert "augment.crop_scal: unknown field 'crop_scal': did you mean 'crop_scale'" in err


@pytest.mark.integration
def test_the_api_suggests_field_names_at_any_depth(alice):
    r = alice.post("/v1/jobs", json={"type": "sweep", "config": {"bach_size": 8},
                                     "grid": {"method": ["dcl"]},
                                     "evaluate": {"train": "builtin:digits", "test": "builtin:digits", "clasifier": "knn"}})
    assert r.status_code == 422
    messages = {e["field"]: e["msg"] for e in r.json()["errors"]}
    assert messages == {"config.bach_size": "unknown field 'bach_size': did you mean 'batch_size'?",
                        "evaluate.clasifier": "unknown field 'clasifier': did you mean 'classifier'?"}


@pytest.mark.integration
def test_jobs_artifacts_and_delete(dcl, alice, api_plane):  # noqa: F811
    job_id = alice.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()["id"]
    code, out, _ = dcl("jobs")
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "NAME", "TYPE", "STATUS", "PROGRESS", "LOSS", "SCORES", "TAGS", "CREATED"]
    assert any(row.split()[:3] == [job_id, "pretrain", "queued"] for row in rows)

    api_plane.lifecycle.claim(job_id, "w1")
    run_dir = api_plane.storage.run_dir(job_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "encoder.json").write_text("{}")
    digest = hashlib.sha256(b"{}").hexdigest()
    api_plane.lifecycle.succeed(job_id, "w1", {}, [ArtifactFile("encoder.json", 2, digest)])
    code, out, err = dcl("artifacts", job_id)
    assert code == 0 and out.splitlines()[1].split()[:3] == ["encoder.json", "2", "B"]
    assert "1 file(s)" in err
    assert json.loads(dcl("artifacts", job_id, "--json")[1])[0]["name"] == "encoder.json"

    assert dcl("delete", job_id, key=BOB)[0] == 2  # not yours: not found
    code, out, _ = dcl("delete", job_id)
    assert code == 0 and out.strip() == f"deleted {job_id}"
    assert alice.get(f"/v1/jobs/{job_id}").status_code == 404
    code, _, err = dcl("delete", "oops")
    assert code == 2 and "neither a job id" in err
