"""A probe's result (`ProbeResult`) and what the classifiers share: checking the train/test
splits and scoring predictions, overall and per class."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from dcl_core.errors import UserError

__all__ = ["ProbeResult", "prepare_splits", "accuracy_scores"]


@dataclass
class ProbeResult:
    """One evaluation. `per_class_accuracy[c]` is NaN for a class absent from the test set
    (null in `to_dict()`, which is JSON-ready).

    `seconds` is the wall time of the call that made it (for `run_probe`: everything, from
    loading the encoder to the score); `run_probe` also splits it into `load_seconds`
    (reading/decoding the images), `extract_seconds` (features of both splits) and
    `classifier_seconds` (fitting and scoring the classifier).
    """

    accuracy: float
    per_class_accuracy: list[float]
    num_train: int
    num_test: int
    classifier: str
    classes: list[str] | None
    seconds: float
    load_seconds: float | None = None
    extract_seconds: float | None = None
    classifier_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["per_class_accuracy"] = [None if math.isnan(v) else v for v in self.per_class_accuracy]
        return data


def _check_split(x: Tensor, y: Tensor, name: str) -> None:
    if x.dim() != 2:
        raise UserError(f"{name} features must be (N, D), got {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise UserError(f"{name} labels must be (N,) with N = {x.shape[0]}, got {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise UserError(f"{name} split is empty")


def prepare_splits(train_x, train_y, test_x, test_y, num_classes):
    """Checks shapes and label ranges; everything on train_x's device; labels int64."""
    _check_split(train_x, train_y, "train")
    _check_split(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise UserError(f"train and test features differ in width: {train_x.shape[1]} vs {test_x.shape[1]}")
    device = train_x.device
    train_x = train_x.float()
    test_x = test_x.to(device).float()
    train_y = train_y.to(device).long()
    test_y = test_y.to(device).long()
    low = int(torch.minimum(train_y.min(), test_y.min()))
    high = int(torch.maximum(train_y.max(), test_y.max()))
    if low < 0:
        raise UserError(f"labels must be >= 0, found {low}")
    if num_classes is None:
        num_classes = high + 1
    elif high >= num_classes:
        raise UserError(f"label {high} is out of range for {num_classes} classes")
    return train_x, train_y, test_x, test_y, int(num_classes)


def accuracy_scores(pred: Tensor, target: Tensor, num_classes: int) -> tuple[float, list[float]]:
    correct = (pred == target).float()
    totals = torch.bincount(target, minlength=num_classes).float()
    hits = torch.zeros(num_classes, device=target.device).index_add_(0, target, correct)
    per_class = torch.where(totals > 0, hits / totals.clamp_min(1), torch.full_like(totals, float("nan")))
    return float(correct.mean()), per_class.tolist()
