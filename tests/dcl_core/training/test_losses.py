"""Contrastive losses against a plain-Python reference written straight from the equations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dcl_core.config import TrainConfig
from dcl_core.errors import UserError
from dcl_core.training.losses import DCLLoss, DCLWLoss, NTXentLoss, build_loss

LOSSES = {
    "dcl": lambda **kw: DCLLoss(**kw),
    "dclw": lambda **kw: DCLWLoss(sigma=0.5, **kw),
    "ntxent": lambda **kw: NTXentLoss(**kw),
}


# ---------------------------------------------------------------- reference (float64, loops)


def _unit(rows: list[list[float]]) -> list[list[float]]:
    return [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in rows]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _lse(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def dclw_weights(z0: torch.Tensor, z1: torch.Tensor, sigma: float) -> list[float]:
    """w_i = 2 - N * softmax_i(s(z0_i, z1_i) / sigma)."""
    a, b = _unit(z0.tolist()), _unit(z1.tolist())
    s = [_dot(a[i], b[i]) / sigma for i in range(len(a))]
    lse = _lse(s)
    return [2 - len(a) * math.exp(v - lse) for v in s]


def reference_terms(z0, z1, temperature):
    """Per anchor (2N of them, view 0 first): (positive logit, negative logits)."""
    a0, a1 = _unit(z0.tolist()), _unit(z1.tolist())
    n = len(a0)
    out = []
    for anchor_view, other_view in ((a0, a1), (a1, a0)):
        for i in range(n):
            pos = _dot(anchor_view[i], other_view[i]) / temperature
            negs = [_dot(anchor_view[i], anchor_view[k]) / temperature for k in range(n) if k != i]
            negs += [_dot(anchor_view[i], other_view[k]) / temperature for k in range(n) if k != i]
            out.append((pos, negs))
    return out


def reference_loss(kind, z0, z1, temperature=0.1, sigma=0.5, weights=None):
    """DCL eq. 6 (one log-sum-exp over the 2N-2 negatives of both views, as lightly >= 1.5.21),
    DCLW (positive scaled by w_i), NT-Xent (positive also in the denominator); mean over 2N."""
    n = z0.shape[0]
    if kind == "dclw" and weights is None:
        weights = dclw_weights(z0, z1, sigma)
    total = 0.0
    for index, (pos, negs) in enumerate(reference_terms(z0, z1, temperature)):
        if kind == "ntxent":
            total += -pos + _lse(negs + [pos])
        elif kind == "dcl":
            total += -pos + _lse(negs)
        else:
            total += -weights[index % n] * pos + _lse(negs)
    return total / (2 * n)


def _pair(n, d, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, d, generator=gen, dtype=dtype)
    z1 = z0 + 0.7 * torch.randn(n, d, generator=gen, dtype=dtype)  # positives correlated
    return z0, z1


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("kind", ["dcl", "dclw", "ntxent"])
@pytest.mark.parametrize("n,d,temperature", [(2, 3, 0.1), (5, 4, 0.1), (7, 6, 0.5), (4, 8, 1.0)])
def test_matches_reference(kind, n, d, temperature):
    z0, z1 = _pair(n, d, seed=n * 31 + d)
    loss = LOSSES[kind](temperature=temperature)(z0, z1)
    assert loss.shape == ()
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(reference_loss(kind, z0, z1, temperature), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("kind", ["dcl", "dclw", "ntxent"])
def test_float32_matches_reference(kind):
    z0, z1 = _pair(16, 12, seed=3)
    loss = LOSSES[kind]()(z0.float(), z1.float())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference_loss(kind, z0, z1), rel=1e-5, abs=1e-5)


def test_dclw_sigma_is_used():
    z0, z1 = _pair(6, 5, seed=9)
    for sigma in (0.1, 0.5, 2.0):
        got = DCLWLoss(temperature=0.2, sigma=sigma)(z0, z1).item()
        assert got == pytest.approx(reference_loss("dclw", z0, z1, 0.2, sigma), rel=1e-10)


@pytest.mark.parametrize("kind", ["dcl", "dclw", "ntxent"])
def test_invariant_to_input_scale(kind):
    z0, z1 = _pair(6, 5, seed=1)
    fn = LOSSES[kind]()
    assert fn(7 * z0, 7 * z1).item() == pytest.approx(fn(z0, z1).item(), rel=1e-12)
    assert fn(z0 / 1000, 3 * z1).item() == pytest.approx(fn(z0, z1).item(), rel=1e-12)


def test_dcl_is_ntxent_without_the_coupling_term():
    # NT-Xent_a = -pos + log(exp(pos) + S), DCL_a = -pos + log(S), S = sum_k exp(neg_k), so
    # NT-Xent_a - DCL_a = log(1 + exp(pos) / S) = softplus(pos - logsumexp(neg)) > 0.
    z0, z1 = _pair(6, 5, seed=2)
    t = 0.3
    coupling = [math.log1p(math.exp(pos - _lse(negs))) for pos, negs in reference_terms(z0, z1, t)]
    expected = sum(coupling) / len(coupling)
    gap = NTXentLoss(temperature=t)(z0, z1) - DCLLoss(temperature=t)(z0, z1)
    assert expected > 0
    assert gap.item() == pytest.approx(expected, rel=1e-10)


def test_dcl_can_go_negative_ntxent_cannot():
    # Perfectly aligned views, well separated images: DCL's minimum is below zero.
    z0 = torch.eye(4, dtype=torch.float64)
    assert DCLLoss(temperature=0.1)(z0, z0.clone()).item() < 0
    assert NTXentLoss(temperature=0.1)(z0, z0.clone()).item() > 0


def test_dclw_with_large_sigma_is_dcl():
    z0, z1 = _pair(8, 5, seed=4)
    assert dclw_weights(z0, z1, 1e6) == pytest.approx([1.0] * 8, abs=1e-6)
    dclw = DCLWLoss(temperature=0.1, sigma=1e6)(z0, z1).item()
    assert dclw == pytest.approx(DCLLoss(temperature=0.1)(z0, z1).item(), abs=1e-5)


def test_dclw_weights_average_to_one():
    z0, z1 = _pair(8, 5, seed=5)
    assert sum(dclw_weights(z0, z1, 0.5)) / 8 == pytest.approx(1.0)


def test_gather_distributed_without_process_group_is_a_noop():
    z0, z1 = _pair(6, 5, seed=6)
    for cls in (DCLLoss, DCLWLoss, NTXentLoss):
        assert cls(gather_distributed=True)(z0, z1).item() == cls()(z0, z1).item()


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", ["dcl", "ntxent"])
def test_gradcheck(kind):
    z0, z1 = _pair(4, 3, seed=7)
    fn = LOSSES[kind](temperature=0.5)
    assert torch.autograd.gradcheck(fn, (z0.requires_grad_(), z1.requires_grad_()))
    assert torch.autograd.gradgradcheck(fn, (z0, z1))


def test_gradcheck_dclw_with_detached_weights():
    # The weights carry no gradient, so the analytic gradient is that of the loss with the
    # weights frozen at the current point: compare with central differences of the reference.
    z0, z1 = _pair(4, 3, seed=8)
    fn = DCLWLoss(temperature=0.5, sigma=0.5)
    x0, x1 = z0.clone().requires_grad_(), z1.clone().requires_grad_()
    g0, g1 = torch.autograd.grad(fn(x0, x1), (x0, x1))
    weights = dclw_weights(z0, z1, 0.5)
    assert max(abs(w - 1) for w in weights) > 0.05  # the weighting is not trivial here
    eps = 1e-6
    for z, grad in ((z0, g0), (z1, g1)):
        for index in range(z.numel()):
            flat = z.view(-1)
            keep = flat[index].item()
            flat[index] = keep + eps
            up = reference_loss("dclw", z0, z1, 0.5, weights=weights)
            flat[index] = keep - eps
            down = reference_loss("dclw", z0, z1, 0.5, weights=weights)
            flat[index] = keep
            assert grad.view(-1)[index].item() == pytest.approx((up - down) / (2 * eps), abs=1e-7)
    # The gradient differs from what differentiating through the weights would give.
    assert torch.autograd.gradcheck(fn, (x0, x1), raise_exception=False) is False


@pytest.mark.parametrize("kind", ["dcl", "dclw", "ntxent"])
def test_batch_size_two_works(kind):
    z0, z1 = _pair(2, 4, seed=10, dtype=torch.float32)
    z0.requires_grad_()
    loss = LOSSES[kind]()(z0, z1)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z0.grad).all() and z0.grad.abs().sum() > 0


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", ["dcl", "dclw", "ntxent"])
def test_batch_size_one_is_a_user_error(kind):
    z = torch.randn(1, 8)
    with pytest.raises(UserError, match="at least 2 images per batch; raise batch_size"):
        LOSSES[kind]()(z, z)


@pytest.mark.parametrize("kind", ["dcl", "dclw", "ntxent"])
def test_shape_mismatch(kind):
    fn = LOSSES[kind]()
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.randn(4, 8), torch.randn(4, 7))
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fn(torch.randn(8), torch.randn(8))


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), "0.1", None])
def test_invalid_temperature(bad):
    for cls in (DCLLoss, DCLWLoss, NTXentLoss):
        with pytest.raises(ValueError, match="temperature"):
            cls(temperature=bad)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_invalid_sigma(bad):
    with pytest.raises(ValueError, match="sigma"):
        DCLWLoss(sigma=bad)


# ---------------------------------------------------------------- precision and compile


@pytest.mark.parametrize("kind", ["dcl", "dclw", "ntxent"])
def test_bf16_autocast_cpu_close_to_fp32(kind):
    torch.manual_seed(0)
    layer = nn.Linear(32, 16)
    x0, x1 = torch.randn(64, 32), torch.randn(64, 32)
    fn = LOSSES[kind]()
    reference = fn(layer(x0), layer(x1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z0, z1 = layer(x0), layer(x1)
        assert z0.dtype == torch.bfloat16
        loss = fn(z0, z1)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(reference.item(), abs=0.01)
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("kind", ["dcl", "dclw", "ntxent"])
def test_half_inputs_are_computed_in_float32(kind):
    z0, z1 = _pair(16, 8, seed=11, dtype=torch.float32)
    fn = LOSSES[kind]()
    loss = fn(z0.half(), z1.half())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(fn(z0, z1).item(), abs=0.01)


@pytest.mark.parametrize("kind", ["dcl", "dclw", "ntxent"])
def test_compiles_without_graph_breaks(kind):
    torch._dynamo.reset()
    z0, z1 = _pair(8, 6, seed=12, dtype=torch.float32)
    fn = LOSSES[kind]()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    x0 = z0.clone().requires_grad_()
    loss = compiled(x0, z1)
    loss.backward()
    y0 = z0.clone().requires_grad_()
    expected = fn(y0, z1)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(x0.grad, y0.grad)


# ---------------------------------------------------------------- build_loss


@pytest.mark.parametrize(
    "method,cls", [("dcl", DCLLoss), ("dclw", DCLWLoss), ("simclr", NTXentLoss)]
)
def test_build_loss(method, cls):
    loss = build_loss(TrainConfig(method=method, temperature=0.2, sigma=0.7))
    assert type(loss) is cls
    assert loss.temperature == 0.2
    assert loss.gather_distributed is True
    if method == "dclw":
        assert loss.sigma == 0.7


# ---------------------------------------------------------------- distributed


WORLD = 2
N_TOTAL = 8


def _distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        z0, z1 = _pair(N_TOTAL, 5, seed=13, dtype=torch.float64)
        shard = slice(rank * N_TOTAL // WORLD, (rank + 1) * N_TOTAL // WORLD)
        results = {}
        for kind, make in LOSSES.items():
            x0 = z0[shard].clone().requires_grad_()
            x1 = z1[shard].clone().requires_grad_()
            loss = make(temperature=0.2, gather_distributed=True)(x0, x1)
            loss.backward()
            results[kind] = (loss.detach(), x0.grad, x1.grad)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gather_distributed_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    z0, z1 = _pair(N_TOTAL, 5, seed=13, dtype=torch.float64)
    for kind, make in LOSSES.items():
        x0, x1 = z0.clone().requires_grad_(), z1.clone().requires_grad_()
        single = make(temperature=0.2)(x0, x1)
        single.backward()
        # Each rank's loss is the mean over its local anchors: their mean is the global loss.
        mean_loss = sum(r[kind][0] for r in ranks) / WORLD
        assert mean_loss.item() == pytest.approx(single.item(), rel=1e-12)
        assert mean_loss.item() == pytest.approx(reference_loss(kind, z0, z1, 0.2), rel=1e-10)
        # A rank's gradient is world_size x that of the mean loss; DDP averaging divides it out.
        g0 = torch.cat([r[kind][1] for r in ranks]) / WORLD
        g1 = torch.cat([r[kind][2] for r in ranks]) / WORLD
        torch.testing.assert_close(g0, x0.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g1, x1.grad, rtol=1e-10, atol=1e-12)
