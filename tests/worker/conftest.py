"""In-process worker tests: the real task body (`execute_job`), the real engine on tiny
data, a real control plane (SQLite job store, embedded SQLite broker) in the test's folder."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from service.control.plane import ControlPlane
from service.control.settings import Settings
from tests.fixtures.control import open_plane

TINY_CONFIG = {
    "encoder": "convnet_small",
    "batch_size": 16,
    "epochs": 1,
    "lr": 0.05,
    "device": "cpu",
    "log_every_steps": 1,
    "dataset": {"source": "builtin:digits", "image_size": 16, "max_images": 48},
}
"""3 steps of 16 digits at 16 px: a second or two on a CPU."""


def long_config(**overrides) -> dict:
    """Enough steps that a test can act while it runs (it is stopped long before the end)."""
    return {**TINY_CONFIG, "epochs": 1000, "checkpoint_every_steps": 2, **overrides}


def make_settings(data_dir: Path, **overrides) -> Settings:
    values = dict(data_dir=data_dir, lease_seconds=3.0, heartbeat_seconds=0.2, requeue_after_seconds=2.0)
    values.update(overrides)
    settings = Settings(**values)
    settings.ensure_dirs()
    return settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def plane(settings) -> ControlPlane:
    """The control plane the task body runs against (its own broker: nothing consumes it here)."""
    with open_plane(settings) as plane:
        yield plane


def pretrain_spec(config: dict | None = None) -> dict:
    return {"type": "pretrain", "config": config or TINY_CONFIG}


class JobThread(threading.Thread):
    """`execute_job` in a thread, as a pool child would run it; `.outcome` when done."""

    def __init__(self, job_id: str, plane: ControlPlane, worker: str = "w1"):
        super().__init__(daemon=True)
        self.job_id, self.plane, self.worker = job_id, plane, worker
        self.outcome: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from worker.tasks import execute_job

        try:
            self.outcome = execute_job(self.job_id, plane=self.plane, worker=self.worker)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def result(self, timeout_s: float = 60) -> str:
        self.join(timeout_s)
        assert not self.is_alive(), f"job {self.job_id} still running after {timeout_s}s"
        if self.error is not None:
            raise self.error
        return self.outcome  # type: ignore[return-value]

