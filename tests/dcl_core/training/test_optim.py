import math

import pytest
import torch
from torch import nn

from dcl_core.config import TrainConfig
from dcl_core.training.optim import LARS, build_optimizer, build_scheduler, lr_as_tensor, param_groups, warmup_cosine


def _net():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_bias_and_norm_parameters_get_no_weight_decay():
    groups = param_groups(_net(), weight_decay=0.1, exclude_bias_norm=True)
    decayed, plain = groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.ndim == 1 for p in plain["params"])
    assert len(decayed["params"]) == 2 and len(plain["params"]) == 4


def test_without_exclusion_everything_decays():
    groups = param_groups(_net(), weight_decay=0.1, exclude_bias_norm=False)
    assert len(groups) == 1 and len(groups[0]["params"]) == 6


def test_schedule_warms_up_linearly_then_follows_cosine_to_zero():
    f = warmup_cosine(total_steps=110, warmup_steps=10)
    assert [f(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(100, 0, "constant")(50) == 1.0


def test_scheduler_sets_lr_from_config():
    config = TrainConfig(batch_size=256, epochs=2, warmup_epochs=1, optimizer="sgd")
    model = _net()
    opt = build_optimizer(model, config, torch.device("cpu"))
    sched = build_scheduler(opt, config, steps_per_epoch=4, total_steps=8)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    base = 0.06
    assert lrs[:4] == pytest.approx([base * k / 4 for k in (1, 2, 3, 4)])
    assert lrs[4] == pytest.approx(base)
    assert lrs[-1] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 3 / 4)))


def test_lars_scales_the_step_by_the_trust_ratio():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    w.grad = torch.tensor([0.6, 0.8])  # ||g|| = 1
    opt = LARS([{"params": [w], "weight_decay": 0.0, "lars": True}], lr=1.0, momentum=0.0, eta=0.01)
    opt.step()
    # trust = 0.01 * 5 / 1 = 0.05: the update is 0.05 * g
    assert w.detach() == pytest.approx(torch.tensor([3.0 - 0.03, 4.0 - 0.04]))


def test_lars_leaves_excluded_groups_unadapted():
    b = nn.Parameter(torch.tensor([1.0]))
    b.grad = torch.tensor([2.0])
    opt = LARS([{"params": [b], "weight_decay": 0.0, "lars": False}], lr=0.1, momentum=0.0)
    opt.step()
    assert b.item() == pytest.approx(1.0 - 0.2)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "lars"])
def test_each_optimizer_reduces_a_simple_loss(name):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    config = TrainConfig(optimizer=name, lr=0.05 if name != "lars" else 0.5, weight_decay=0.0)
    opt = build_optimizer(model, config, torch.device("cpu"))
    first = None
    for _ in range(50):
        loss = nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_lars_trust_ratio_with_weight_decay_is_the_papers():
    # w = (3, 4): ||w|| = 5; g = (1, 0): ||g|| = 1 (not parallel to w, so ||g + wd*w|| would differ).
    # trust = eta * ||w|| / (||g|| + wd * ||w||) = 0.001 * 5 / (1 + 0.1 * 5) = 1/300
    # step = lr * trust * (g + wd * w) = 2 * (1/300) * (1.3, 0.4)
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    opt = LARS([{"params": [w], "weight_decay": 0.1, "lars": True}], lr=2.0, momentum=0.9, eta=0.001)
    w.grad = torch.tensor([1.0, 0.0])
    opt.step()
    first = torch.tensor([1.3, 0.4]) / 300
    expected = torch.tensor([3.0, 4.0]) - 2.0 * first
    assert torch.allclose(w.detach(), expected, atol=1e-7)
    # Second step, momentum 0.9: buf = 0.9 * first + trust' * (g' + wd * w').
    w.grad = torch.tensor([0.0, 2.0])
    w_now = w.detach().clone()
    w_norm = torch.linalg.vector_norm(w_now)
    trust = 0.001 * w_norm / (2.0 + 0.1 * w_norm)
    buf = 0.9 * first + trust * (torch.tensor([0.0, 2.0]) + 0.1 * w_now)
    opt.step()
    assert torch.allclose(w.detach(), w_now - 2.0 * buf, atol=1e-7)


def _reference_lars_step(params, state, lr, momentum, wd, eta, lars):
    """LARS one parameter at a time (the loop the foreach update replaced)."""
    for p in params:
        grad = p.grad
        trust = None
        if lars:
            w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
            denom = g_norm + wd * w_norm
            trust = torch.where((w_norm > 0) & (denom > 0), eta * w_norm / denom, 1.0)
        if wd:
            grad = grad.add(p, alpha=wd)
        if trust is not None:
            grad = grad.mul(trust)
        buf = state.get(p)
        buf = state[p] = grad.clone() if buf is None else buf.mul_(momentum).add_(grad)
        p.add_(buf, alpha=-lr)


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_foreach_lars_equals_the_per_parameter_reference(tensor_lr):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    ref = [p.detach().clone() for p in net.parameters()]
    groups = param_groups(net, weight_decay=0.01, exclude_bias_norm=True)
    opt = LARS(groups, lr=0.5, momentum=0.9, eta=0.02)
    if tensor_lr:
        lr_as_tensor(opt, True)
    states = [{}, {}]
    ref_groups = [[ref[i] for i, p in enumerate(net.parameters()) if any(p is q for q in g["params"])] for g in groups]
    for _ in range(5):
        x = torch.randn(8, 5)
        grads = torch.autograd.grad(net(x).square().mean(), list(net.parameters()))
        for p, r, g in zip(net.parameters(), ref, grads):
            p.grad, r.grad = g.clone(), g.clone()
        opt.step()
        for k, group in enumerate(groups):
            with torch.no_grad():
                _reference_lars_step(ref_groups[k], states[k], 0.5, 0.9, group["weight_decay"], 0.02, group["lars"])
    for p, r in zip(net.parameters(), ref):
        assert torch.allclose(p.detach(), r, atol=1e-6), (p, r)
