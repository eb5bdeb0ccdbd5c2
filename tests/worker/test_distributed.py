"""A multi-device job stopped mid-run: the job process asks the torchrun ranks to stop, they
agree on the step, rank 0 checkpoints, and the job ends cancelled with its checkpoint."""

from __future__ import annotations

import pytest

from tests.fixtures.control import submit
from tests.worker.conftest import JobThread, long_config
from tests.fixtures.waiting import wait_until
from worker.distributed import STOP_POLL_STEPS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def test_cancelled_two_process_job_stops_every_rank_at_one_step(plane, settings):
    settings.lease_seconds, settings.heartbeat_seconds = 30.0, 1.0  # torch starts slowly in two processes here
    job = submit(plane, "me", {"type": "pretrain", "config": long_config(), "resources": {"gpus": 2}})
    thread = JobThread(job.id, plane)
    thread.start()
    wait_until(lambda: plane.jobs.get(job.id).step >= 2, 300, 0.2, what="two steps under torchrun")
    plane.lifecycle.cancel(job.id)
    assert thread.result(300) == "cancelled"
    done = plane.jobs.get(job.id)
    assert done.status == "cancelled"
    assert 2 <= done.step < done.total_steps
    assert done.step % STOP_POLL_STEPS == 0  # the ranks stop only where they all poll rank 0
    steps = [row["step"] for row in plane.metrics.since(job.id)]
    assert steps == list(range(1, done.step + 1))  # one series, rank 0's
    assert "checkpoint.pt" in {a.name for a in plane.artifacts.list(job.id)}
