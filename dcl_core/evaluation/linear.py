"""The linear probe: multinomial logistic regression on standardised features, full batch,
L-BFGS with a strong-Wolfe line search, L2 penalty on the weights (not the bias), on the
features' device with no host-device synchronisation but what L-BFGS needs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dcl_core.evaluation.result import ProbeResult, accuracy_scores, prepare_splits

__all__ = ["LinearClassifier", "train_logistic", "linear_probe"]


@dataclass
class LinearClassifier:
    """Softmax regression on standardised features: logits = ((x - mean) / std) @ weight.T + bias."""

    weight: Tensor  # (C, D)
    bias: Tensor  # (C,)
    mean: Tensor  # (D,)
    std: Tensor  # (D,)

    def logits(self, x: Tensor) -> Tensor:
        x = (x.to(self.weight.device).float() - self.mean) / self.std
        return torch.addmm(self.bias, x, self.weight.t())

    def predict_proba(self, x: Tensor) -> Tensor:
        return self.logits(x).softmax(dim=1)

    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(dim=1)


def train_logistic(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 1e-4,
    seed: int = 0,
    check_stop: Callable[[], None] | None = None,
) -> LinearClassifier:
    """Fit a multinomial logistic regression, full batch, on x's device.

    Minimises  mean cross-entropy + weight_decay / 2 * ||W||^2  (the bias is not penalised;
    in scikit-learn's terms weight_decay = 1 / (C * N)) over features standardised with the
    training mean and (population) std. L-BFGS with a strong-Wolfe line search runs at most
    `epochs` iterations; `lr` is its initial step length (the line search adapts it). The
    weights start at zero: the problem is convex, so the result does not depend on `seed`,
    which is kept for a reproducible interface. `check_stop` is called at every evaluation.
    """
    del seed  # zero init, deterministic
    x = x.detach().float()
    y = y.detach().long()
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))
    xs = (x - mean) / std
    dim = xs.shape[1]
    weight = torch.zeros(num_classes, dim, device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=lr,
        max_iter=epochs,
        max_eval=epochs * 5 // 4 + 20,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )
    half_decay = 0.5 * weight_decay

    def closure() -> Tensor:
        if check_stop is not None:
            check_stop()
        optimizer.zero_grad(set_to_none=False)
        loss = F.cross_entropy(torch.addmm(bias, xs, weight.t()), y)
        if weight_decay:
            loss = loss + half_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return LinearClassifier(weight.detach(), bias.detach(), mean, std)


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int | None = None,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 1e-4,
    seed: int = 0,
    check_stop: Callable[[], None] | None = None,
) -> ProbeResult:
    """Test accuracy of a logistic regression trained on (train_x, train_y); see `train_logistic`."""
    started = time.perf_counter()
    train_x, train_y, test_x, test_y, num_classes = prepare_splits(train_x, train_y, test_x, test_y, num_classes)
    model = train_logistic(
        train_x, train_y, num_classes, epochs=epochs, lr=lr, weight_decay=weight_decay, seed=seed,
        check_stop=check_stop,
    )
    accuracy, per_class = accuracy_scores(model.predict(test_x), test_y, num_classes)
    return ProbeResult(
        accuracy=accuracy,
        per_class_accuracy=per_class,
        num_train=int(train_x.shape[0]),
        num_test=int(test_x.shape[0]),
        classifier="logistic",
        classes=None,
        seconds=time.perf_counter() - started,
    )
