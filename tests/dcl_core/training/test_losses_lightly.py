"""Our losses agree with lightly >= 1.5.21 (the reference the issue names), value and gradient."""

import pytest
import torch

lightly_loss = pytest.importorskip("lightly.loss")

from dcl_core.training.losses import DCLLoss, DCLWLoss, NTXentLoss  # noqa: E402


def _pair(n, d, seed):
    gen = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    z1 = torch.randn(n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    return z0, z1


def _value_and_grads(loss_fn, z0, z1):
    loss = loss_fn(z0, z1)
    g0, g1 = torch.autograd.grad(loss, (z0, z1))
    return loss.detach(), g0, g1


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: DCLLoss(temperature=0.1), lambda: lightly_loss.DCLLoss(temperature=0.1)),
        (lambda: DCLLoss(temperature=0.5), lambda: lightly_loss.DCLLoss(temperature=0.5)),
        (lambda: DCLWLoss(temperature=0.1, sigma=0.5), lambda: lightly_loss.DCLWLoss(temperature=0.1, sigma=0.5)),
        (lambda: NTXentLoss(temperature=0.2), lambda: lightly_loss.NTXentLoss(temperature=0.2)),
    ],
    ids=["dcl-t0.1", "dcl-t0.5", "dclw", "ntxent"],
)
@pytest.mark.parametrize("n, d, seed", [(2, 3, 0), (8, 16, 1), (33, 7, 2)])
def test_loss_matches_lightly_value_and_gradient(ours, theirs, n, d, seed):
    z0, z1 = _pair(n, d, seed)
    mine = _value_and_grads(ours(), z0, z1)
    ref = _value_and_grads(theirs(), z0, z1)
    for a, b in zip(mine, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
