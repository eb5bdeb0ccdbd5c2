"""benchmarks/gpu_check.sh in its dry mode (CPU, tiny sizes, no install): every step runs and the
summary holds each figure the GPU run reports (none of them asserted: no timing is a test)."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_check_dry_run_writes_every_result(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PY": sys.executable, "OUT": str(out), "WORK": str(tmp_path / "work"), "BUDGET_S": "850"}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=880)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "summary.json", "summary.md"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry"] is True
    assert {name: step["rc"] for name, step in summary["steps"].items()} == dict.fromkeys(
        ["throughput_b16", "throughput_b8", "train_cold", "train_warm", "jobs_per_gpu", "probe_cold", "probe_cached"], "0")
    for batch in ("16", "8"):
        assert summary["throughput"][batch]["ratio"] > 0
    epochs = summary["train_cold"]["epochs"]
    assert len(epochs) == 2 and all(e["epoch_time_s"] >= e["checkpoint_s"] >= 0 for e in epochs)
    assert "compile_s" in summary["train_cold"] and "compile_s" in summary["train_warm"]  # null: the CPU compiles nothing
    assert summary["jobs_per_gpu_b32"]["2"] > 0
    assert summary["probe_cold"]["accuracy"] is not None and summary["probe_cached"]["wall_s"] >= 0
    assert "| 16 |" in (out / "summary.md").read_text()
    with tarfile.open(out / "logs.tar.gz") as logs:
        assert "logs/train_cold.metrics.jsonl" in logs.getnames()
