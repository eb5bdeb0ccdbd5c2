"""The background checkpoint writer and the report thread of a run (dcl_core.training.run_log)."""

import errno
import hashlib
import os
import threading

import pytest
import torch

from dcl_core import files
from dcl_core.hooks import NullHooks
from dcl_core.training.checkpoint import load_checkpoint
from dcl_core.training.checkpoint_writer import CheckpointWriter, Gate
from dcl_core.training.run_log import HookThread, LossReader, MetricsLog
from tests.fixtures.volumes import FailingWrites


def _writer(path):
    written = []
    return CheckpointWriter(path, lambda p, sha: written.append((p, sha)), pin=False), written


def test_the_written_state_is_the_one_at_save_time_and_its_sha256_is_the_files(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    writer, written = _writer(path)
    weights = torch.arange(6.0)
    gate = Gate()
    writer.save({"model": {"w": weights}, "step": 4, "sched": [1, {"lr": 0.5}]}, gate)
    weights.mul_(100)  # training goes on changing the live tensor while the write waits
    gate.open()
    writer.wait()
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(6.0)) and loaded["step"] == 4
    assert loaded["sched"] == [1, {"lr": 0.5}]
    assert written == [(path, hashlib.sha256(path.read_bytes()).hexdigest())]


def test_a_second_save_waits_for_the_first_and_reuses_its_host_buffers(tmp_path):
    path = tmp_path / "last.pt"
    writer, written = _writer(path)
    first, second = Gate(), Gate()
    writer.save({"w": torch.zeros(3), "step": 1}, first)
    threading.Timer(0.2, first.open).start()
    writer.save({"w": torch.ones(3), "step": 2}, second)  # returns only once the first write landed
    assert [sha for _, sha in written] and load_checkpoint(path)["step"] == 1
    second.open()
    writer.wait()
    assert load_checkpoint(path)["step"] == 2 and torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert len(written) == 2


def test_a_shut_gate_leaves_the_previous_checkpoint_and_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    writer, written = _writer(path)
    gate = Gate()
    writer.save({"step": 1}, gate)
    gate.open()
    writer.wait()
    gate = Gate()
    writer.save({"step": 2}, gate)
    gate.shut()
    writer.wait()
    assert load_checkpoint(path)["step"] == 1 and len(written) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_failed_write_is_raised_in_the_training_thread_naming_the_file(tmp_path, monkeypatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda *a, **k: FailingWrites(real_fdopen(*a, **k), 1000))
    path = tmp_path / "last.pt"
    writer, written = _writer(path)
    gate = Gate()
    gate.open()
    writer.save({"w": torch.zeros(1 << 16)}, gate)
    with pytest.raises(OSError) as caught:
        writer.wait()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert written == [] and list(tmp_path.iterdir()) == []
    writer.wait()  # raised once


class Recorder(NullHooks):
    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def on_start(self, total_steps, info):
        self.calls.append(("start", total_steps))

    def on_step(self, step, metrics):
        if step == self.fail_at:
            raise RuntimeError("lease lost")
        self.calls.append(("step", step))

    def on_checkpoint(self, path, sha256):
        self.calls.append(("checkpoint", sha256))


def test_rows_reach_the_hooks_and_the_file_in_order_and_once(tmp_path):
    hooks = Recorder()
    log = MetricsLog(tmp_path / "metrics.jsonl", 0, enabled=True)
    reports = HookThread(hooks, log)
    reports.on_start(10, {})
    gate = Gate()
    for step in range(1, 2000):  # more than the queue holds: the caller waits, nothing is dropped
        reports.row({"step": step, "loss": 1.0})
        if step == 5:
            reports.open_after_queued(gate)
            reports.on_checkpoint(tmp_path / "last.pt", "abc")
    reports.close()
    assert gate.commit
    assert hooks.calls[:7] == [("start", 10)] + [("step", s) for s in range(1, 6)] + [("checkpoint", "abc")]
    assert [c for c in hooks.calls if c[0] == "step"] == [("step", s) for s in range(1, 2000)]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1999


def test_a_failing_hook_shuts_later_gates_and_is_raised_in_the_training_thread(tmp_path):
    hooks = Recorder(fail_at=3)
    reports = HookThread(hooks, MetricsLog(tmp_path / "m.jsonl", 0, enabled=False))
    before, after = Gate(), Gate()
    reports.row({"step": 2})
    reports.open_after_queued(before)
    reports.row({"step": 3})
    reports.row({"step": 4})
    reports.open_after_queued(after)
    with pytest.raises(RuntimeError, match="lease lost"):
        reports.close()
    assert before.commit and not after.commit
    assert hooks.calls == [("step", 2)]  # nothing delivered past the failure
    with pytest.raises(RuntimeError, match="lease lost"):
        reports.check()


def test_the_loss_reader_hands_back_the_window_mean_after_the_sum_is_reset():
    reader = LossReader(torch.device("cpu"))
    total = torch.tensor(6.0)
    handle = reader.start(total, 3)
    total.zero_()
    assert reader.read(handle) == 2.0
