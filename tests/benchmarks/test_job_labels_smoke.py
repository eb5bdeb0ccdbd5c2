"""benchmarks/job_labels.py: a whole tiny run (its own store and API) in a subprocess."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "job_labels.py"


@pytest.mark.slow
def test_smoke_run_prints_every_table():
    done = subprocess.run([sys.executable, str(SCRIPT), "--jobs", "200", "--repeat", "1"],
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.startswith("200 jobs in SQLite")
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| request")]
    assert len(rows) == 7 + 2 + 2 + 2  # the list's cases, two pages, two status reads, two more headers
    assert "| newest first, 25 (reference) |" in out and "| 1.00 |" in out
