"""benchmarks/jobs_per_gpu.py: a tiny CPU run (CI keeps the script working; no timing asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "jobs_per_gpu.py"


@pytest.mark.slow
def test_jobs_per_gpu_smoke_measures_two_processes_at_once():
    args = ["--device", "cpu", "--encoder", "convnet_small", "--image-size", "16", "--num-images", "64",
            "--seconds", "0.5", "--warmup", "1", "--steps-per-check", "1", "--jobs", "2", "--threads", "1"]
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| jobs at once | aggregate views/s |" in out.stdout, out.stdout
    assert "\n| 2 | " in out.stdout, out.stdout
