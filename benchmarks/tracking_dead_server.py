"""What a dead MLflow server costs a worker: two tiny pretrain jobs run one after the other by the
worker's task body (`execute_job`, as its pool processes run them), with
DCL_MLFLOW_TRACKING_URI pointing at a closed port and the default 60 s flush allowance, against
the same two jobs without tracking (the reference, measured in the same run).

    python benchmarks/tracking_dead_server.py
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.control.settings import Settings  # noqa: E402
from tests.fixtures.control import open_plane, submit  # noqa: E402
from worker import tracking  # noqa: E402
from worker.tasks import execute_job  # noqa: E402

CONFIG = {"encoder": "convnet_small", "batch_size": 16, "epochs": 2, "device": "cpu", "log_every_steps": 1,
          "dataset": {"source": "builtin:digits", "image_size": 16, "max_images": 64}}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_jobs(folder: Path, uri: str | None) -> float:
    settings = Settings(data_dir=folder, mlflow_tracking_uri=uri)
    settings.ensure_dirs()
    tracking.arm()
    tracking.preload(settings)  # as a worker's main process does: mlflow imported before the jobs
    with open_plane(settings) as plane:
        started = time.monotonic()
        for _ in range(2):
            job = submit(plane, "me", {"type": "pretrain", "config": CONFIG})
            assert execute_job(job.id, plane=plane, worker="bench/1") == "succeeded"
        return time.monotonic() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        two_jobs(Path(tmp) / "warm", None)  # imports, the digits cache
        dead_uri = f"http://127.0.0.1:{closed_port()}"
        reference = two_jobs(Path(tmp) / "off", None)
        dead = two_jobs(Path(tmp) / "dead", dead_uri)
        reference = min(reference, two_jobs(Path(tmp) / "off2", None))  # the machine is shared: best of two
        dead = min(dead, two_jobs(Path(tmp) / "dead2", dead_uri))
    print(f"two jobs, no tracking:          {reference:.1f} s")
    print(f"two jobs, dead tracking server: {dead:.1f} s ({dead - reference:+.1f} s, x{dead / reference:.2f})")


if __name__ == "__main__":
    main()
