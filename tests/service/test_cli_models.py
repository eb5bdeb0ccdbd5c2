"""`dcl register`, `dcl alias`, `dcl models` and `dcl download model:NAME@ALIAS` against a real API
over HTTP (the job's worker side played through the control plane)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from dcl_core.cli import main
from tests.service.conftest import ALICE, BOB

pytestmark = pytest.mark.integration


@pytest.fixture
def dcl(api, capsys):
    """Runs `dcl ARGS --url API --key KEY` in this process; returns (exit code, stdout, stderr)."""

    def run(*args, key=ALICE):
        code = main([*args, "--url", api.url, "--key", key])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def trained(alice, api_plane, score: float) -> str:
    job_id = alice.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()["id"]
    api_plane.lifecycle.claim(job_id, "w1")
    files = [api_plane.storage.write_file(job_id, "encoder.safetensors", os.urandom(2000)),
             api_plane.storage.write_file(job_id, "encoder.json", b"{}")]
    api_plane.lifecycle.succeed(job_id, "w1", {"scores": {"linear_top1": score}}, files)
    return job_id


def test_register_alias_list_and_download_by_alias(dcl, alice, api_plane, tmp_path):
    name = f"cli-{os.urandom(3).hex()}"
    first, second = trained(alice, api_plane, 0.8), trained(alice, api_plane, 0.9)
    code, out, _ = dcl("register", name, first, "--alias", "production")
    assert code == 0 and out.splitlines() == [f"{name} version 1 (job {first}, model:{name}/1)",
                                              f"{name}@production -> version 1"]
    assert dcl("register", name, second)[0] == 0
    code, out, _ = dcl("alias", name, "production", "2")
    assert code == 0 and out.strip() == f"{name}@production -> version 2"
    code, out, err = dcl("models")
    assert code == 0 and f"{name}  latest v2  2 version(s)  production=v2" in out and "model(s)" in err
    code, out, _ = dcl("models", name)
    lines = out.splitlines()
    assert lines[0] == f"{name}: 2 version(s), production=v2"
    assert lines[1].startswith(f"  v2  {second}  linear_top1 90.0 %  sha256 ") and lines[1].endswith("[production]")
    assert json.loads(dcl("models", name, "--json")[1])["versions"][1]["job"] == first
    code, out, _ = dcl("download", f"model:{name}@production", "--out", str(tmp_path / "prod"))
    assert code == 0
    weights = (tmp_path / "prod" / "encoder.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == api_plane.artifacts.get(second, "encoder.safetensors").sha256
    code, out, _ = dcl("alias", name, "production", "--delete")
    assert code == 0 and dcl("models", name)[1].splitlines()[0] == f"{name}: 2 version(s), no aliases"


def test_mistakes_are_the_services_messages(dcl, alice, api_plane):
    name = f"cli-{os.urandom(3).hex()}"
    job_id = trained(alice, api_plane, 0.5)
    code, _, err = dcl("register", "bad name", job_id)
    assert code == 2 and "422" in err and "name" in err
    assert dcl("register", name, job_id)[0] == 0
    code, _, err = dcl("alias", name, "production", "4")
    assert code == 2 and "has no version 4" in err
    code, _, err = dcl("alias", name, "production")
    assert code == 2 and "give the version" in err
    code, _, err = dcl("models", name, key=BOB)
    assert code == 2 and "404" in err and f"model {name} not found" in err
