"""Several jobs on one GPU: a job starts only when the GPU has room for it.

The GPU is out of reach on this machine, so the one call that reads its memory
(`gpu_memory.free_memory`) is replaced by a GPU that is full, or too small; everything else
(the store, the broker, the task body) is real."""

from __future__ import annotations

import pytest

from service.control.queue import pending_job_ids
from tests.fixtures.control import open_plane, submit
from tests.worker.conftest import TINY_CONFIG, make_settings
from worker import gpu_memory
from worker.gpu_memory import FITS, MiB, NEVER, WAIT, room_for_job
from worker.tasks import execute_job, wait_for_gpu_memory

GPU_SPEC = {"type": "pretrain", "config": {**TINY_CONFIG, "device": "cuda"}}


@pytest.mark.parametrize("free, total, verdict", [
    (3000 * MiB, 80_000 * MiB, FITS),
    (2048 * MiB, 80_000 * MiB, FITS),
    (1000 * MiB, 80_000 * MiB, WAIT),  # other jobs hold the memory: wait for them
    (1000 * MiB, 1500 * MiB, NEVER),  # even an empty GPU is too small
])
def test_room_for_a_job_against_the_floor(free, total, verdict):
    assert room_for_job(free, total, floor=2048 * MiB) == verdict


def test_a_cpu_job_never_looks_at_the_gpu(monkeypatch):
    monkeypatch.setattr(gpu_memory, "free_memory", lambda device: pytest.fail("read the GPU for a CPU job"))
    assert gpu_memory.check("cpu", 2048) == (FITS, "")


def test_a_job_finding_the_gpu_full_goes_back_to_the_queue_uncounted(tmp_path, monkeypatch):
    settings = make_settings(tmp_path / "data", gpu_job_min_free_mib=2048, gpu_wait_seconds=30)
    monkeypatch.setattr(gpu_memory, "free_memory", lambda device: (512 * MiB, 80_000 * MiB))
    with open_plane(settings) as plane:
        job = submit(plane, "me", GPU_SPEC)
        assert job.queue == "gpu"
        with plane.celery.connection_for_write() as conn:
            conn.default_channel.queue_purge("gpu")  # its message is delivered to w1
        claimed = plane.lifecycle.claim(job.id, "w1")
        assert wait_for_gpu_memory(claimed, plane=plane, worker="w1") == "waiting"
        back = plane.jobs.get(job.id)
        assert back.status == "queued" and back.worker is None and back.attempts == 0
        assert pending_job_ids(plane.celery, ["gpu"]) == {job.id}  # its message waits out the countdown
        assert plane.lifecycle.claim(job.id, "w2").attempts == 1  # the next try is its first


def test_a_gpu_too_small_for_any_job_fails_it_with_what_to_do(plane, monkeypatch):
    monkeypatch.setattr(gpu_memory, "free_memory", lambda device: (1000 * MiB, 1500 * MiB))
    job = submit(plane, "me", GPU_SPEC)
    assert execute_job(job.id, plane=plane, worker="w1") == "failed"
    error = plane.jobs.get(job.id).error
    assert "1500 MiB in all" in error and "DCL_GPU_JOB_MIN_FREE_MIB" in error
