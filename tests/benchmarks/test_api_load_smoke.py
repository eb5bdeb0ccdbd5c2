"""benchmarks/api_load.py: a whole tiny run (its own API and worker, a training job) in a subprocess."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "api_load.py"


@pytest.mark.slow
def test_smoke_run_polls_a_training_job_without_errors_and_prints_the_table():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--clients", "5", "--sse", "2", "--seconds", "2"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "| endpoint | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors |" in out
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines()
            if line.startswith(("| GET", "| all"))}
    assert set(rows) == {"GET /v1/jobs/{id}", "GET /v1/jobs/{id}/metrics", "GET /v1/jobs/{id}/events", "all"}
    assert all(int(cells[0]) > 0 and cells[-1].strip() == "0" for cells in rows.values())  # requests, errors
    assert "running" in out.splitlines()[0]  # the job trained throughout the window
