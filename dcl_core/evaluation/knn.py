"""The weighted kNN of Wu et al. 2018 (cosine similarity, top-k neighbours vote with weight
exp(sim / temperature)), the usual SSL monitor; chunked over test rows on the features' device."""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dcl_core.evaluation.result import ProbeResult, accuracy_scores, prepare_splits

__all__ = ["knn_predict", "knn_accuracy"]


def knn_predict(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
    check_stop: Callable[[], None] | None = None,
) -> Tensor:
    """Weighted-kNN class predictions for test_x (Wu et al. 2018): each of the k most
    cosine-similar training samples votes for its label with weight exp(sim / temperature).
    `check_stop` is called before every chunk."""
    if k < 1:
        raise ValueError("k must be >= 1")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    train_n = F.normalize(train_x.float(), dim=1)
    test_n = F.normalize(test_x.to(train_x.device).float(), dim=1)
    train_y = train_y.to(train_x.device).long()
    k = min(k, train_n.shape[0])
    preds = []
    for start in range(0, test_n.shape[0], chunk):
        if check_stop is not None:
            check_stop()
        sim = test_n[start : start + chunk] @ train_n.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, train_y[top_idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk: int = 1024,
    check_stop: Callable[[], None] | None = None,
) -> ProbeResult:
    """Test accuracy of the weighted kNN classifier (see `knn_predict`), chunked over test rows."""
    started = time.perf_counter()
    train_x, train_y, test_x, test_y, num_classes = prepare_splits(train_x, train_y, test_x, test_y, num_classes)
    pred = knn_predict(
        train_x, train_y, test_x, num_classes=num_classes, k=k, temperature=temperature, chunk=chunk,
        check_stop=check_stop,
    )
    accuracy, per_class = accuracy_scores(pred, test_y, num_classes)
    return ProbeResult(
        accuracy=accuracy,
        per_class_accuracy=per_class,
        num_train=int(train_x.shape[0]),
        num_test=int(test_x.shape[0]),
        classifier="knn",
        classes=None,
        seconds=time.perf_counter() - started,
    )
