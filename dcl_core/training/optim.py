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
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad, wd = p.grad, group["weight_decay"]
                trust = None
                if group["lars"]:
                    # The paper's ratio: the norms of the raw gradient and of the weights, added
                    # (not the norm of g + wd * w, which differs unless g is parallel to w).
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    denom = g_norm + wd * w_norm
                    # torch.where keeps this on the device: no host sync per parameter.
                    trust = torch.where((w_norm > 0) & (denom > 0), group["eta"] * w_norm / denom, 1.0)
                if wd:
                    grad = grad.add(p, alpha=wd)
                if trust is not None:
                    grad = grad.mul(trust)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


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
