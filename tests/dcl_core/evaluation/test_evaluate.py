"""`evaluate` in a pretrain config: the run scores its own encoder when training ends."""

import json

from dcl_core.config import TrainConfig
from dcl_core.export.encoder import read_meta
from dcl_core.hooks import NullHooks
from dcl_core.training.train import fit

EVALUATE = {"train": {"source": "builtin:digits", "max_images": 300},
            "test": {"source": "builtin:digits", "split": "test", "max_images": 120}}


def tiny(**overrides) -> TrainConfig:
    base = dict(method="dcl", encoder="convnet_small", dataset={"source": "builtin:digits", "max_images": 128,
                                                                  "image_size": 8},
                batch_size=32, epochs=1, projection_hidden_dim=32, projection_dim=16, seed=1, device="cpu")
    return TrainConfig.model_validate({**base, **overrides})


class Steps(NullHooks):
    def __init__(self):
        self.totals = []

    def on_start(self, total_steps, info):
        self.totals.append(total_steps)


def test_evaluate_both_puts_linear_and_knn_scores_in_the_result_and_encoder_json(tmp_path):
    hooks = Steps()
    result = fit(tiny(evaluate={**EVALUATE, "classifier": "both"}), tmp_path, hooks)
    scores = result.evaluation["scores"]
    assert set(scores) == {"linear_top1", "knn_top1", "recall_at_1", "recall_at_5", "recall_at_10", "map_at_r"}
    assert all(0.1 < v <= 1.0 for v in scores.values())  # ten classes: chance is 0.1
    assert result.evaluation["evaluation"]["knn"]["num_test"] == 120
    assert result.evaluation["evaluation"]["logistic"]["classifier"] == "logistic"
    assert read_meta(tmp_path)["scores"] == scores
    assert hooks.totals == [4]  # the probe does not report its own steps as the run's


def test_evaluate_knn_only_scores_knn_only(tmp_path):
    result = fit(tiny(evaluate={**EVALUATE, "classifier": "knn", "retrieval": False}), tmp_path)
    assert list(result.evaluation["scores"]) == ["knn_top1"]  # retrieval turned off
    assert json.loads((tmp_path / "encoder.json").read_text())["scores"] == result.evaluation["scores"]
