import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dcl_core.config import TrainConfig
from dcl_core.hooks import NullHooks
from dcl_core.tracking import TENSORBOARD_DIR, SinkHooks, TensorBoardHooks
from dcl_core.training.train import fit


def tiny(**overrides) -> TrainConfig:
    base = dict(
        method="dcl", encoder="convnet_small", dataset={"source": "builtin:digits", "max_images": 128, "image_size": 8},
        batch_size=32, epochs=2, projection_hidden_dim=16, projection_dim=8, log_every_steps=2, seed=1, device="cpu",
    )
    return TrainConfig.model_validate({**base, **overrides})


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_fit_writes_tensorboard_events_matching_metrics_jsonl(tmp_path):
    fit(tiny(), tmp_path)
    scalars = read_scalars(tmp_path / TENSORBOARD_DIR)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "views_per_s", "epoch"} <= set(scalars)
    assert [step for step, _ in scalars["loss"]] == [row["step"] for row in rows] == [2, 4, 6, 8]
    assert [value for _, value in scalars["loss"]] == pytest.approx([row["loss"] for row in rows], rel=1e-6)
    assert "step" not in scalars


class Boom(NullHooks):
    def __init__(self):
        self.calls = 0

    def on_step(self, step, metrics):
        self.calls += 1
        raise OSError("tracking server gone")


class Primary(NullHooks):
    def __init__(self):
        self.steps = []
        self.stop_reason = "cancelled"

    def on_step(self, step, metrics):
        self.steps.append(step)

    def should_stop(self):
        return True


def test_a_failing_sink_is_dropped_and_never_fails_the_run():
    primary, boom, good = Primary(), Boom(), Spy()
    hooks = SinkHooks(primary, [boom, good])
    hooks.on_step(1, {"loss": 1.0})
    hooks.on_step(2, {"loss": 0.5})
    assert primary.steps == [1, 2] and boom.calls == 1 and good.steps == [1, 2]
    assert hooks.sinks == [good]
    assert hooks.should_stop() is True and hooks.stop_reason == "cancelled"  # the primary's answers


class Spy(NullHooks):
    def __init__(self):
        self.steps = []

    def on_step(self, step, metrics):
        self.steps.append(step)


def test_the_primarys_errors_still_unwind_the_engine():
    class Lost(NullHooks):
        def on_step(self, step, metrics):
            raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        SinkHooks(Lost(), []).on_step(1, {})


def test_tensorboard_sink_skips_non_numbers_and_writes_nothing_before_a_step(tmp_path):
    sink = TensorBoardHooks(tmp_path)
    sink.close()
    assert not (tmp_path / TENSORBOARD_DIR).exists()
    sink.on_step(3, {"loss": 0.25, "note": "text", "bad": float("nan"), "flag": True})
    sink.close()
    assert read_scalars(tmp_path / TENSORBOARD_DIR) == {"loss": [(3, 0.25)]}
