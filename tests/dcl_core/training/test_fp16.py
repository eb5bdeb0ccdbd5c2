"""fp16 training steps scale the loss (torch.amp.GradScaler); run on the CPU's fp16 autocast."""

from __future__ import annotations

import torch
from torch import nn

from dcl_core.training.step import make_train_step


def one_step(scaler, loss_scale: float = 1.0):
    """One fp16 step of a tiny model; returns (weights before, weights after)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e6)  # makes a 1e-9 gradient visible
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    def loss_fn(z0, z1):
        return loss_scale * (z0.float() * z1.float()).sum()  # losses are computed in fp32, as DCL's

    step = make_train_step(model, loss_fn, lambda batch: batch, optimizer, scheduler,
                           dtype=torch.float16, channels_last=False, scaler=scaler)
    before = [p.detach().clone() for p in model.parameters()]
    loss = step(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)))
    assert torch.isfinite(loss)
    return before, [p.detach() for p in model.parameters()]


def test_small_gradients_underflow_in_fp16_without_scaling_and_survive_with_it():
    # dL/dz ~ 1e-9: below fp16's smallest subnormal (6e-8), so it flushes to zero unscaled.
    before, after = one_step(None, loss_scale=1e-9)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    before, after = one_step(torch.amp.GradScaler("cpu", init_scale=2.0**16), loss_scale=1e-9)
    assert not torch.equal(before[0], after[0])
    assert all(torch.isfinite(p).all() for p in after)


def test_an_overflowing_step_is_skipped_and_the_scale_backs_off():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)
    before, after = one_step(scaler)
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # inf gradients: no update
    assert scaler.get_scale() == 2.0**59
