"""Optimisers (SGD, Adam, AdamW, LARS) and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from dcl_core.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float, exclude_bias_norm: bool) -> list[dict]:
    """Two groups: weights with decay, and biases/norm parameters (ndim <= 1) without.

    The second group is also excluded from LARS adaptation, as in SimCLR (Chen et al. 2020).
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if exclude_bias_norm and param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "lars": True}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars": False})
    return groups


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017).

    For a parameter w with gradient g in a group with `lars=True` (You et al. 2017, eq. 6 and
    algorithm 1): trust = eta * ||w|| / (||g|| + wd * ||w||) (1 where ||w|| is 0),
    update = lr * trust * (g + wd * w), with momentum. Groups with `lars=False` take plain
    SGD steps lr * (g + wd * w).
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        if lr <= 0 or eta <= 0:
            raise ValueError("LARS needs lr > 0 and eta > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params)
        return loss

    def _update(self, group: dict, params: list[torch.Tensor]) -> None:
        """One group's update as a few foreach operations over all its tensors (no Python loop
        issuing kernels per parameter)."""
        grads = [p.grad for p in params]
        wd, lr = group["weight_decay"], group["lr"]
        trust = None
        if group["lars"]:
            # The paper's ratio: the norms of the raw gradient and of the weights, added
            # (not the norm of g + wd * w, which differs unless g is parallel to w).
            w_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(grads))
            denom = g_norm + wd * w_norm
            # torch.where keeps this on the device: no host sync per parameter.
            trust = torch.where((w_norm > 0) & (denom > 0), group["eta"] * w_norm / denom, 1.0).unbind()
        if wd:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if trust is not None:
            grads = torch._foreach_mul(grads, trust)
        for p in params:
            if "momentum_buffer" not in self.state[p]:  # first step: 0 * m + g is g exactly
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        bufs = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_mul_(bufs, group["momentum"])
        torch._foreach_add_(bufs, grads)
        if isinstance(lr, torch.Tensor):
            torch._foreach_sub_(params, torch._foreach_mul(bufs, lr))
        else:
            torch._foreach_add_(params, bufs, alpha=-lr)


def lr_as_tensor(optimizer: torch.optim.Optimizer, as_tensor: bool) -> None:
    """Each group's learning rate as a 0-d tensor (a compiled step reads it without recompiling
    when the scheduler changes it) or as a float (the eager step; also how checkpoints made
    before tensors were used hold it). Either loads from either."""
    for group in optimizer.param_groups:
        lr = group["lr"]
        if as_tensor and not isinstance(lr, torch.Tensor):
            group["lr"] = torch.tensor(float(lr), dtype=torch.float32)
            if group.get("foreach") and group.get("capturable") is False:
                group["foreach"] = False  # Adam's foreach form takes a tensor lr only when capturable (CUDA)
        elif not as_tensor and isinstance(lr, torch.Tensor):
            group["lr"] = float(lr)


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay, config.exclude_bias_norm_from_wd)
    lr = config.learning_rate()
    # Fused kernels on CUDA: one launch for all parameters instead of one per tensor.
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, **fast)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, **fast)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **fast)
    return LARS(groups, lr=lr, momentum=config.momentum)


def warmup_cosine(total_steps: int, warmup_steps: int, schedule: str = "cosine"):
    """Multiplier for step s: linear warmup from ~0 to 1, then cosine to 0 (or constant)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int, total_steps: int):
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps, config.schedule))
