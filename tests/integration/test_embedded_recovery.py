"""`dcl serve --embedded` through real processes: a SIGKILLed worker is restarted and its job
runs again while the server stays up; a SIGTERM gives the running job back (checkpointed, lease
released) and the next start resumes it; a second server on the same data folder is refused.
The recovery times are benchmarks/recovery_times.py's (RESULTS.md), not asserted here."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from service.control.settings import Settings
from tests.fixtures.control import open_plane
from tests.fixtures.servers import free_port
from tests.fixtures.serving import DIGITS_JOB, start_serve, serving, wait_status, worker_pid

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]


def running_at(step: int):
    return lambda job: job["status"] == "running" and (job["progress"]["step"] or 0) >= step


def test_a_killed_embedded_worker_is_restarted_and_its_job_runs_again(tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    with serving(tmp_path / "data", port, log) as proc, httpx.Client(base_url=f"http://127.0.0.1:{port}",
                                                                     timeout=30) as c:
        job_id = c.post("/v1/jobs", json=DIGITS_JOB).json()["id"]
        wait_status(c, job_id, running_at(4))
        pid = worker_pid(c.base_url)
        os.killpg(pid, signal.SIGKILL)  # the OOM killer's way: no warning, no clean-up
        done = wait_status(c, job_id, lambda job: job["status"] in ("succeeded", "failed"))
        assert done["status"] == "succeeded" and done["attempts"] == 2, done
        assert proc.poll() is None  # the server stayed up
        ready = c.get("/readyz").json()
        assert ready["workers"]["embedded"] == {"alive": True, "restarts": 1}
    text = log.read_text()
    assert f"embedded worker (pid {pid}) was killed by SIGKILL" in text, text[-3000:]


def test_sigterm_gives_the_running_job_back_and_the_next_start_resumes_it(tmp_path):
    data, log = tmp_path / "data", tmp_path / "serve.log"
    port = free_port()
    with serving(data, port, log) as proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        job_id = c.post("/v1/jobs", json=DIGITS_JOB).json()["id"]
        step = wait_status(c, job_id, running_at(4))["progress"]["step"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    with open_plane(Settings(data_dir=data)) as plane:  # the server is gone: read its store
        job = plane.jobs.get(job_id)
        assert job.status == "queued" and job.worker is None and job.lease_expires_at is None, job
        assert job.step >= step and (plane.storage.run_dir(job_id) / "checkpoints" / "last.pt").exists()
    port = free_port()
    with serving(data, port, log), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        done = wait_status(c, job_id, lambda job: job["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    assert "given back at step" in log.read_text()


def test_a_second_server_on_the_same_data_folder_exits_naming_the_first(tmp_path):
    data, log = tmp_path / "data", tmp_path / "serve.log"
    with serving(data, free_port(), log) as first:
        second = start_serve(data, free_port(), tmp_path / "second.log")
        assert second.wait(60) != 0
        out = (tmp_path / "second.log").read_text()
        assert f"another `dcl serve` (pid {first.pid}) is using the data folder" in out, out
        assert first.poll() is None
