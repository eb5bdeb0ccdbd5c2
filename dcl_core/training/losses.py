"""Contrastive losses: DCL and DCLW (Yeh et al. 2021) and NT-Xent (SimCLR, Chen et al. 2020).

All three take `z0, z1`: (N, D) projections of two augmented views of the same N images
(row i of `z0` and row i of `z1` come from image i) and return the scalar mean loss over the
2N anchors (every row of both views is an anchor once). Similarities are cosine similarities
s(a, b) = <a/|a|, b/|b|>, so the losses do not depend on the scale of the projections.

With t the temperature, for an anchor a with positive p (the other view of its image), its
self-similarity excluded, and the 2N-2 negatives {n_k} (both views of every other image):

    NT-Xent: loss_a = -s(a,p)/t + log( exp(s(a,p)/t) + sum_k exp(s(a,n_k)/t) )
    DCL:     loss_a = -s(a,p)/t + log( sum_k exp(s(a,n_k)/t) )              (eq. 6)
    DCLW:    loss_a = -w_i s(a,p)/t + log( sum_k exp(s(a,n_k)/t) ),
             w_i = 2 - N * softmax_i( s(z0_i, z1_i) / sigma )   (over the batch, no gradient)

DCL removes the positive from the denominator ("decoupling"): NT-Xent_a - DCL_a =
log(1 + exp(s(a,p)/t) / sum_k exp(s(a,n_k)/t)) >= 0. Unlike NT-Xent, the DCL and DCLW losses
have no lower bound of 0: once positives are much closer than negatives they go **negative**
(about -1/t + log(2N-2) at best). A negative, decreasing loss is normal, not divergence.

The values agree with lightly >= 1.5.21 (`DCLLoss`, `DCLWLoss`, `NTXentLoss`), which take one
log-sum-exp over the negatives of both views (lightly < 1.5.21 summed two separate ones).

Implementation: one (2N x 2M) similarity matmul (M = N times the world size when gathering),
self and positive entries masked with `masked_fill` by boolean masks built from `arange`
(no boolean indexing, no `.item()`, no per-sample Python loops), so the losses run under
`torch.compile(fullgraph=True)`. Under bf16/fp16 autocast the projections are normalised and
compared in float32 with autocast disabled for the similarity block.

Distributed (`gather_distributed=True` and torch.distributed initialised, world size W > 1):
every rank gathers both views from all ranks (all ranks must pass the same N) and uses them as
negatives; anchors and positives stay local, and the loss is the mean over the local anchors.
The gather passes gradients back to the local shard (an all-reduce of the gradients), so a
rank's input gradient is W times that of the loss averaged over ranks; DDP's gradient averaging
divides by W, giving exactly the gradients of one process training on the whole N*W batch. For
DCLW the softmax of the weights runs over the whole gathered batch too. Without an initialised
process group (or with W == 1) gathering is a no-op.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dcl_core.errors import UserError

if TYPE_CHECKING:
    from dcl_core.config import TrainConfig

__all__ = ["DCLLoss", "DCLWLoss", "NTXentLoss", "build_loss"]


def _world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is unavailable or not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 forward; backward all-reduces (sums) the gradient of the gathered
    tensor over ranks and returns this rank's slice, so every rank's loss reaches its inputs."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        rank, world = _world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def _gather_no_grad(x: Tensor) -> Tensor:
    parts = [torch.empty_like(x) for _ in range(_world()[1])]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


class _ContrastiveLoss(nn.Module):
    """Shared forward of the three losses; subclasses set `decoupled` and `sigma`."""

    decoupled: bool = True
    sigma: float | None = None

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__()
        self.temperature = _check_positive("temperature", temperature)
        self.gather_distributed = bool(gather_distributed)

    def extra_repr(self) -> str:
        sigma = f", sigma={self.sigma}" if self.sigma is not None else ""
        return f"temperature={self.temperature}{sigma}, gather_distributed={self.gather_distributed}"

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """z0, z1: (N, D) projections of the two views; returns the scalar mean loss (float32,
        or float64 for float64 inputs)."""
        if z0.ndim != 2 or z0.shape != z1.shape:
            raise ValueError(
                f"z0 and z1 must both be (N, D) with the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}"
            )
        rank, world = _world() if self.gather_distributed else (0, 1)
        n = z0.shape[0]
        if n * world < 2:
            raise UserError(
                "batch size 1: a contrastive loss needs at least 2 images per batch; raise batch_size"
            )
        dtype = torch.promote_types(z0.dtype, torch.float32)  # bf16/fp16 -> float32, float64 stays
        with torch.autocast(device_type=z0.device.type, enabled=False):
            return self._loss(z0.to(dtype), z1.to(dtype), rank, world)

    def _loss(self, z0: Tensor, z1: Tensor, rank: int, world: int) -> Tensor:
        n = z0.shape[0]
        z0 = nn.functional.normalize(z0, dim=1)
        z1 = nn.functional.normalize(z1, dim=1)
        anchors = torch.cat([z0, z1], dim=0)  # (2n, D): view-0 rows, then view-1 rows
        if world > 1:
            # (W*2n, D), rank-major; reorder to [all view 0; all view 1] like the anchors.
            gathered = _GatherWithGrad.apply(anchors).view(world, 2, n, -1)
            candidates = gathered.transpose(0, 1).reshape(2 * world * n, -1)
        else:
            candidates = anchors
        m = n * world  # images in the global batch

        # Column of each anchor's own entry and of its positive in the (2n, 2m) matrix.
        local = torch.arange(n, device=z0.device) + rank * n
        self_col = torch.cat([local, local + m])
        pos_col = torch.cat([local + m, local])
        cols = torch.arange(2 * m, device=z0.device)
        self_mask = cols.unsqueeze(0) == self_col.unsqueeze(1)

        logits = anchors @ candidates.T / self.temperature  # (2n, 2m)
        positive = (anchors * torch.cat([z1, z0], dim=0)).sum(dim=1) / self.temperature  # (2n,)
        if self.decoupled:
            neg_mask = self_mask | (cols.unsqueeze(0) == pos_col.unsqueeze(1))
            logits = logits.masked_fill(neg_mask, float("-inf"))
        else:
            logits = logits.masked_fill(self_mask, float("-inf"))

        if self.sigma is not None:
            with torch.no_grad():
                s = (z0 * z1).sum(dim=1) / self.sigma  # (n,), symmetric in the two views
                s_all = _gather_no_grad(s) if world > 1 else s
                weight = 2 - m * torch.exp(s - torch.logsumexp(s_all, dim=0))
            positive = positive * torch.cat([weight, weight])
        return (torch.logsumexp(logits, dim=1) - positive).mean()


class DCLLoss(_ContrastiveLoss):
    """Decoupled contrastive loss (Yeh et al. 2021, eq. 6), symmetric over the two views.

    For anchor i of view 0 (view 1 alike, the views swapped), with s the cosine similarity:
        loss_i = -s(z0_i, z1_i)/t + logsumexp( {s(z0_i, z0_k)/t}_{k!=i} U {s(z0_i, z1_k)/t}_{k!=i} )
    i.e. one log-sum-exp over the 2N-2 negatives, the positive left out. forward(z0, z1) with
    z0, z1 of shape (N, D), N >= 2, returns the mean over the 2N anchors (a scalar, often < 0).
    """

    decoupled = True


class DCLWLoss(_ContrastiveLoss):
    """Weighted DCL (Yeh et al. 2021): DCL with the positive term of image i scaled by the
    negative von Mises-Fisher weight
        w_i = 2 - N * softmax_i( s(z0_i, z1_i) / sigma )     (softmax over the N images, detached)
    which is larger for the harder (less similar) positive pairs and averages to 1.
    forward(z0, z1): (N, D) each, N >= 2 -> scalar mean over the 2N anchors.
    """

    decoupled = True

    def __init__(self, temperature: float = 0.1, sigma: float = 0.5, gather_distributed: bool = False) -> None:
        super().__init__(temperature=temperature, gather_distributed=gather_distributed)
        self.sigma = _check_positive("sigma", sigma)


class NTXentLoss(_ContrastiveLoss):
    """NT-Xent, the SimCLR loss (Chen et al. 2020): cross-entropy over the 2N-1 other samples.

    For anchor i of view 0 (view 1 alike):
        loss_i = -s(z0_i, z1_i)/t + logsumexp( {s(z0_i, z0_k)/t}_{k!=i} U {s(z0_i, z1_k)/t}_{all k} )
    (only the self-similarity is masked; the positive stays in the denominator).
    forward(z0, z1): (N, D) each, N >= 2 -> scalar mean over the 2N anchors (always >= 0).
    """

    decoupled = False


def build_loss(config: "TrainConfig") -> nn.Module:
    """The loss of `config.method` (an entry of `dcl_core.training.methods.METHODS`) with the config's
    options (temperature, sigma); gathers negatives across ranks when training is distributed."""
    from dcl_core.lazy import load
    from dcl_core.training.methods import METHODS

    method = METHODS.get(config.method)
    if method is None:
        raise UserError(f"unknown method {config.method!r}; choose one of {sorted(METHODS)}")
    options = {name: getattr(config, name) for name in method.options}
    return load(method.loss)(**options, gather_distributed=True)
