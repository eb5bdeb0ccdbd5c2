"""benchmarks/webhook_outbox.py runs end to end on a few jobs (the figures are in RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fixtures.servers import REPO_ROOT

pytestmark = pytest.mark.slow


def test_webhook_outbox_benchmark_runs(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/webhook_outbox.py", "--jobs", "3", "--deliveries", "3"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "20 hooks" in done.stdout and "received 3; the hanging one: timed out after 2 s" in done.stdout
