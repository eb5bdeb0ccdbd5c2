"""benchmarks/step_overhead.py and compile_cache.py: tiny CPU runs (CI keeps the scripts working; no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
TINY = ["--device", "cpu", "--encoder", "convnet_small", "--batch-size", "4", "--image-size", "16"]


def run(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # compiles on a loaded 2-core CPU: minutes
def test_step_overhead_counts_the_ops_of_an_eager_and_a_compiled_step():
    eager = run("step_overhead.py", *TINY, "--warmup", "1", "--steps", "1", "--no-compile", "--json")
    assert eager["ops_outside_graphs"] > 50 and eager["host_ms_per_step"] > 0 and not eager["compile"]
    whole = run("step_overhead.py", *TINY, "--warmup", "2", "--steps", "1", "--compile", "--json")
    assert whole["compile_step"] and whole["ops_outside_graphs"] < 20, whole["top_ops"]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # compiles on a loaded 2-core CPU: minutes
def test_compile_cache_reports_a_cold_and_a_warm_compile():
    result = run("compile_cache.py", "--device", "cpu", "--json")
    assert result["compile_s_cold"] > 0 and result["compile_s_warm"] >= -1
