"""How long a running job takes to run again after each way its worker can go, measured through
the API of a real `dcl serve --embedded` (default settings: a 60 s lease, so nothing here waits
for one to run out):

- kill of the job's process (SIGKILL of the pool child): to running again under a new holder;
- kill of the embedded worker (SIGKILL of its process group): the same, `dcl serve` staying up;
- SIGKILL of `dcl serve`, then a new one: from the new start to running again;
- SIGTERM of `dcl serve` (its time to exit), then a new one: from the new start to running again.

    python benchmarks/recovery_times.py

"Running again": GET /v1/jobs/{id} shows it `running` held by a process other than before.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.servers import free_port, stop_process, wait_for_port  # noqa: E402
from tests.fixtures.serving import DIGITS_JOB, start_serve, wait_status, worker_pid  # noqa: E402

JOB = {**DIGITS_JOB, "config": {**DIGITS_JOB["config"], "epochs": 500}}


class Stack:
    def __init__(self, folder: Path):
        self.folder, self.data, self.proc = folder, folder / "data", None

    def start(self) -> float:
        """Starts `dcl serve`; returns the time it was started (time.monotonic())."""
        self.port = free_port()
        started = time.monotonic()
        self.proc = start_serve(self.data, self.port, self.folder / "serve.log")
        wait_for_port(self.port, 120, self.proc, self.folder / "serve.log")
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        return started

    def running(self, job_id: str, not_held_by: str | None = None) -> dict:
        return wait_status(self.client, job_id, lambda j: j["status"] == "running" and j["worker"] != not_held_by
                           and (j["progress"]["step"] or 0) >= 1, timeout_s=300)


def measure(stack: Stack, job_id: str, how: str) -> tuple[float, float | None]:
    """(seconds to running again, seconds `dcl serve` took to exit, when it was stopped)."""
    job = stack.running(job_id)
    holder = job["worker"]
    node, _, pid = holder.rpartition("/")
    exit_s = None
    if how == "job process":
        hit = time.monotonic()
        os.kill(int(pid), signal.SIGKILL)
    elif how == "worker":
        hit = time.monotonic()
        os.killpg(worker_pid(stack.client.base_url), signal.SIGKILL)
    else:
        stopped = time.monotonic()
        stack.proc.send_signal(signal.SIGKILL if how == "dcl serve (SIGKILL)" else signal.SIGTERM)
        stack.proc.wait(60)
        exit_s = time.monotonic() - stopped
        stack.client.close()
        hit = stack.start()
    stack.running(job_id, not_held_by=holder)
    return time.monotonic() - hit, exit_s


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        stack.start()
        job_id = stack.client.post("/v1/jobs", json=JOB).json()["id"]
        print("| what was stopped | running again after (s) | `dcl serve` exited after (s) |")
        print("|---|---|---|")
        try:
            for how in ("job process", "worker", "dcl serve (SIGKILL)", "dcl serve (SIGTERM)"):
                again, exit_s = measure(stack, job_id, how)
                since = "the new start" if how.startswith("dcl serve") else "the kill"
                print(f"| {how} | {again:.1f} (from {since}) | {'' if exit_s is None else f'{exit_s:.1f}'} |",
                      flush=True)
        finally:
            stop_process(stack.proc, timeout_s=30)


if __name__ == "__main__":
    main()
