"""benchmarks/throughput.py: a tiny CPU run of every row (CI keeps the script working; no timing asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"


@pytest.mark.slow
def test_throughput_smoke_prints_every_row_and_the_ratios():
    args = ["--device", "cpu", "--encoder", "convnet_small", "--batch-size", "16", "--steps", "2", "--windows", "1",
            "--warmup", "1", "--num-images", "64", "--peer-workers", "0"]
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    for row in ("| model-only |", "| ours (end to end) |", "| peer: lightly 1.6.0 (end to end) |",
                "ours / model-only:", "ours / peer:", "ratio batched / per-image:"):
        assert row in out.stdout, out.stdout
