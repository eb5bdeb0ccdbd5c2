import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dcl_core.config import TrainConfig
from dcl_core.errors import UserError
from dcl_core.hooks import NullHooks
from dcl_core.training.train import fit


def tiny(**overrides) -> TrainConfig:
    base = dict(
        method="dcl", encoder="convnet_small", dataset={"source": "builtin:digits", "max_images": 256},
        batch_size=32, epochs=2, projection_hidden_dim=64, projection_dim=32, log_every_steps=2,
        checkpoint_every_steps=3, seed=3, device="cpu",
    )
    return TrainConfig.model_validate({**base, **overrides})


class Recorder(NullHooks):
    def __init__(self, stop_at=None):
        self.steps, self.metrics, self.checkpoints, self.stop_at, self.start = [], [], [], stop_at, None
        self.last_step = 0

    def on_start(self, total_steps, info):
        self.start = (total_steps, info)

    def on_step(self, step, metrics):
        self.steps.append(step)
        self.metrics.append(metrics)
        self.last_step = step

    def should_stop(self):
        self.calls = getattr(self, "calls", 0) + 1
        return self.stop_at is not None and self.calls >= self.stop_at

    def on_checkpoint(self, path, sha256):
        self.checkpoints.append((path, sha256))


def _weights(run_dir):
    return load_file(run_dir / "encoder.safetensors")


@pytest.mark.parametrize("method", ["dcl", "dclw", "simclr"])
def test_fit_trains_and_exports_an_encoder(tmp_path, method):
    hooks = Recorder()
    result = fit(tiny(method=method), tmp_path, hooks)
    assert result.steps == result.total_steps == 16 and not result.stopped
    assert hooks.start[0] == 16 and hooks.start[1]["steps_per_epoch"] == 8
    assert hooks.steps == [2, 4, 6, 8, 10, 12, 14, 16]
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in hooks.metrics)
    assert {"loss", "lr", "views_per_s", "epoch"} <= set(hooks.metrics[-1])
    assert "epoch_time_s" in hooks.metrics[3]
    meta = json.loads((tmp_path / "encoder.json").read_text())
    assert meta["encoder"] == "convnet_small" and meta["config"]["method"] == method
    assert meta["sha256"] == result.encoder_sha256
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == hooks.steps
    assert hooks.checkpoints and (tmp_path / "checkpoints" / "last.pt").exists()


def test_training_changes_the_encoder_and_lowers_the_loss(tmp_path):
    hooks = Recorder()
    fit(tiny(epochs=6, dataset={"source": "builtin:digits", "max_images": 512}, batch_size=64, log_every_steps=8), tmp_path, hooks)
    losses = [m["loss"] for m in hooks.metrics]
    assert losses[-1] < losses[0]


def test_a_stopped_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path):
    full = tmp_path / "full"
    fit(tiny(), full)

    part = tmp_path / "part"
    stopped = fit(tiny(), part, Recorder(stop_at=5))
    assert stopped.stopped and stopped.steps == 5
    assert not (part / "encoder.safetensors").exists()
    resumed_hooks = Recorder()
    resumed = fit(tiny(), part, resumed_hooks)
    assert resumed.steps == 16 and resumed_hooks.start[1]["start_step"] == 5

    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = [json.loads(line)["step"] for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert rows == sorted(set(rows)) and rows[-1] == 16


def test_resuming_with_a_different_config_is_refused(tmp_path):
    fit(tiny(), tmp_path, Recorder(stop_at=2))
    with pytest.raises(UserError, match="different config"):
        fit(tiny(temperature=0.5), tmp_path)


def test_a_diverging_run_fails_with_the_step_and_a_hint(tmp_path, monkeypatch):
    import dcl_core.training.train as train

    class NanLoss(torch.nn.Module):
        def forward(self, z0, z1):
            return (z0 * z1).sum() * float("nan")

    monkeypatch.setattr(train, "build_loss", lambda config: NanLoss())
    with pytest.raises(UserError, match=r"diverged.*Lower lr"):
        fit(tiny(log_every_steps=100, checkpoint_every_steps=1), tmp_path)
    assert not (tmp_path / "encoder.safetensors").exists()
    assert not (tmp_path / "checkpoints" / "last.pt").exists()  # spoilt weights are never checkpointed


def test_a_batch_larger_than_the_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="fewer than batch_size"):
        fit(tiny(batch_size=512), tmp_path)


def test_constant_one_pixel_images_train_instead_of_failing_on_std_zero(tmp_path):
    # Issue 9, item 11: 1x1 constant images failed the job with "std must be > 0".
    np.savez(tmp_path / "flat.npz", x=np.full((32, 1, 1, 3), 7, np.uint8))
    result = fit(tiny(dataset={"source": str(tmp_path / "flat.npz")}, batch_size=16, epochs=1), tmp_path / "run")
    assert result.steps == 2 and (tmp_path / "run" / "encoder.safetensors").is_file()
    meta = json.loads((tmp_path / "run" / "encoder.json").read_text())
    assert min(meta["std"]) > 0


def test_max_runtime_ends_the_run_with_that_reason(tmp_path):
    with pytest.raises(UserError, match="max_runtime_s"):
        # A config refuses caps under 1 s (issue 21); the engine's check is what is tested here.
        fit(tiny().model_copy(update={"max_runtime_s": 1e-6}), tmp_path)
    assert (tmp_path / "checkpoints" / "last.pt").exists()


def test_knn_monitor_reports_accuracy_at_epoch_ends(tmp_path):
    monitor = {"train": {"source": "builtin:digits", "max_images": 300}, "test": {"source": "builtin:digits", "split": "test", "max_images": 100}, "k": 20}
    hooks = Recorder()
    fit(tiny(knn_monitor=monitor), tmp_path, hooks)
    accs = [m["knn_acc"] for m in hooks.metrics if "knn_acc" in m]
    assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    assert accs[-1] > 0.2  # ten classes: chance is 0.1


@pytest.mark.slow
def test_two_process_ddp_run_trains_and_rank_zero_exports(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    config = tiny(epochs=1).model_dump(mode="json")
    config.pop("device")
    (tmp_path / "c.json").write_text(json.dumps(config))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd = [*torchrun, "-m", "dcl_core.cli", "train", str(tmp_path / "c.json"), "--out", str(tmp_path / "run"), "--quiet"]
    # Its own process group, so a hang cannot leave the two ranks running after the test.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    report = json.loads(stdout)  # rank 0 alone prints
    meta = json.loads((tmp_path / "run" / "encoder.json").read_text())
    assert report["encoder_sha256"] == meta["sha256"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 8  # 256 images / global batch 32


@pytest.fixture
def folder(tmp_path):
    """64 generated 16 px PNGs in two class folders (lossless: both data paths decode alike)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(32):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            pixels[4:12, 4:12] = (200, 40 + 150 * c, 40)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root


def streamed(folder, in_memory, **overrides):
    dataset = {"source": str(folder), "in_memory": in_memory}
    return tiny(dataset=dataset, batch_size=16, **overrides)


def test_streamed_and_in_memory_folders_train_to_the_same_weights(tmp_path, folder):
    runs = {}
    for in_memory in (True, False):
        hooks = Recorder()
        fit(streamed(folder, in_memory), tmp_path / str(in_memory), hooks)
        assert hooks.start[1]["in_memory"] is in_memory and hooks.start[0] == 8
        runs[in_memory] = _weights(tmp_path / str(in_memory))
    for key in runs[True]:
        assert torch.equal(runs[True][key], runs[False][key]), key


def test_a_stopped_streaming_run_resumes_to_the_same_weights(tmp_path, folder):
    fit(streamed(folder, False), tmp_path / "full")
    part = tmp_path / "part"
    stopped = fit(streamed(folder, False), part, Recorder(stop_at=3))  # mid-epoch: 4 steps an epoch
    assert stopped.stopped and stopped.steps == 3
    hooks = Recorder()
    fit(streamed(folder, False), part, hooks)
    assert hooks.start[1]["start_step"] == 3
    a, b = _weights(tmp_path / "full"), _weights(part)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_streamed_run_resumes_in_memory(tmp_path, folder):
    """in_memory does not change the run's math, so a checkpoint carries over either way."""
    fit(streamed(folder, False), tmp_path, Recorder(stop_at=2))
    hooks = Recorder()
    fit(streamed(folder, True), tmp_path, hooks)
    assert hooks.start[1]["start_step"] == 2 and hooks.steps[-1] == 8


def test_epoch_rows_time_the_whole_epoch_and_its_parts(tmp_path):
    hooks = Recorder()
    knn = {"train": {"source": "builtin:digits", "max_images": 64}, "test": {"source": "builtin:digits", "max_images": 32},
           "k": 5}
    result = fit(tiny(knn_monitor=knn), tmp_path, hooks)
    epoch_rows = [m for m in hooks.metrics if "epoch_time_s" in m]
    assert [m["step"] for m in epoch_rows] == [8, 16]
    for row in epoch_rows:
        assert row["knn_s"] > 0 and row["checkpoint_s"] > 0 and row["train_s"] > 0
        assert row["epoch_time_s"] == pytest.approx(row["train_s"] + row["knn_s"] + row["checkpoint_s"])
    assert not any("train_s" in m for m in hooks.metrics if "epoch_time_s" not in m)
    assert result.compile_s is None  # an eager run compiles nothing


def test_checkpoints_also_follow_the_wall_clock(tmp_path):
    by_steps = Recorder()
    fit(tiny(checkpoint_every_steps=1000), tmp_path / "steps", by_steps)
    assert len(by_steps.checkpoints) == 3  # the two epoch ends and the end of the run
    by_clock = Recorder()
    fit(tiny(checkpoint_every_steps=1000, checkpoint_every_s=1e-9), tmp_path / "clock", by_clock)
    assert len(by_clock.checkpoints) == 17  # every step, and the end of the run
