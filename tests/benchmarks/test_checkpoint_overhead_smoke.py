"""benchmarks/checkpoint_overhead.py: a tiny CPU run of every way (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "checkpoint_overhead.py"


@pytest.mark.slow
def test_checkpoint_overhead_smoke_times_every_way(tmp_path):
    args = ["--encoder", "convnet_small", "--num-images", "64", "--batch-size", "32", "--epochs", "2", "--rounds", "1",
            "--work-dir", str(tmp_path), "--json"]
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["epochs_timed"] == {"none": 1, "sync": 1, "async": 1}
    assert result["checkpoint_mb"] > 0 and set(result["overhead_pct"]) == {"sync", "async"}
    assert set(result["checkpoint_s_share_pct"]) == {"none", "sync", "async"}
