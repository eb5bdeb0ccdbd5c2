"""The whole training step compiled (augmentation, model, loss, backward, optimiser) trains like
the eager step; its pieces (the split random draw, the tensor learning rate) change nothing."""

import pytest
import torch

from dcl_core.config import AugmentConfig, TrainConfig
from dcl_core.training.augment import SimCLRAugment
from dcl_core.training.losses import build_loss
from dcl_core.training.optim import build_optimizer, build_scheduler, lr_as_tensor
from dcl_core.training.step import build_model, make_train_step, view_maker

SIZE = 16
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_views_drawn_then_rendered_equal_one_augment_call():
    augment = SimCLRAugment(AugmentConfig(), SIZE, MEAN, STD)
    batch = torch.randint(0, 256, (6, 3, SIZE, SIZE), dtype=torch.uint8)
    views = view_maker(augment, torch.Generator().manual_seed(3))
    first = views(batch)
    again = views(batch)  # the second draw reuses the static buffer
    assert first.shape == (12, 3, SIZE, SIZE)
    expected = torch.Generator().manual_seed(3)
    assert torch.equal(first, augment(torch.cat([batch, batch]), expected))
    assert torch.equal(again, augment(torch.cat([batch, batch]), expected))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "lars"])
def test_a_tensor_learning_rate_follows_the_schedule_and_trains_the_same(optimizer):
    def run(as_tensor: bool):
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 2)
        config = TrainConfig(optimizer=optimizer, batch_size=8, epochs=2, warmup_epochs=1)
        opt = build_optimizer(net, config, torch.device("cpu"))
        sched = build_scheduler(opt, config, steps_per_epoch=3, total_steps=6)
        lr_as_tensor(opt, as_tensor)
        x, lrs = torch.randn(16, 4), []
        for _ in range(6):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
            sched.step()
            lrs.append(float(opt.param_groups[0]["lr"]))
        assert isinstance(opt.param_groups[0]["lr"], torch.Tensor) == as_tensor
        return lrs, net.weight.detach()

    (lrs_f, w_f), (lrs_t, w_t) = run(False), run(True)
    assert lrs_t == pytest.approx(lrs_f)
    assert torch.allclose(w_t, w_f, atol=1e-6)


def _trajectory(whole: bool, steps: int) -> list[float]:
    config = TrainConfig(encoder="convnet_small", batch_size=8, projection_dim=16, projection_hidden_dim=32, epochs=2,
                         warmup_epochs=0.5, device="cpu")
    torch.manual_seed(0)
    model, _ = build_model(config, SIZE)
    optimizer = build_optimizer(model, config, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=steps // 2, total_steps=steps)
    gen = torch.Generator()
    views = view_maker(SimCLRAugment(config.augment, SIZE, MEAN, STD), gen)
    step = make_train_step(model, build_loss(config), views, optimizer, scheduler, dtype=None, channels_last=False,
                           compile=whole, whole=whole)
    images = torch.randint(0, 256, (64, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    losses = []
    with _NoFallback():
        for i in range(steps):
            gen.manual_seed(i)
            losses.append(float(step(images[(i % 8) * 8:(i % 8 + 1) * 8])))
    return losses


class _NoFallback:
    """Fails the test if the compiled step fell back to eager (its warning)."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        fallbacks = [w for w in self._seen if "training eagerly" in str(w.message)]
        assert not fallbacks, fallbacks[0].message


@pytest.mark.slow
@pytest.mark.timeout(1800)  # compiling on a loaded 2-core CPU takes minutes
def test_the_compiled_whole_step_follows_the_eager_loss_trajectory():
    steps = 200
    eager, compiled = _trajectory(False, steps), _trajectory(True, steps)
    eager_t, compiled_t = torch.tensor(eager), torch.tensor(compiled)
    assert torch.isfinite(compiled_t).all()
    # The first steps agree to float rounding (measured: ~1e-5); later ones drift apart as rounding
    # differences (fusion reorders sums) compound, without changing the course (measured on a
    # loss going from ~5 to ~2.6: at most 0.077 at any step).
    assert torch.allclose(compiled_t[:10], eager_t[:10], atol=1e-3)
    assert (compiled_t - eager_t).abs().max() < 0.15, (compiled_t - eager_t).abs().max()
    assert abs(compiled_t[-50:].mean() - eager_t[-50:].mean()) < 0.05
    assert compiled_t[-20:].mean() < compiled_t[:20].mean() - 1.0  # it trains


def test_a_checkpoint_with_a_tensor_learning_rate_resumes_either_way(tmp_path):
    from dcl_core.training.checkpoint import load_checkpoint, save_checkpoint

    config = TrainConfig(batch_size=8, epochs=2)
    net = torch.nn.Linear(3, 2)
    opt = build_optimizer(net, config, torch.device("cpu"))
    sched = build_scheduler(opt, config, steps_per_epoch=2, total_steps=4)
    lr_as_tensor(opt, True)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    save_checkpoint(tmp_path / "c.pt", {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    state = load_checkpoint(tmp_path / "c.pt")
    for as_tensor in (False, True):
        again = build_optimizer(net, config, torch.device("cpu"))
        again_sched = build_scheduler(again, config, steps_per_epoch=2, total_steps=4)
        again.load_state_dict(state["optimizer"])
        again_sched.load_state_dict(state["scheduler"])
        lr_as_tensor(again, as_tensor)
        assert isinstance(again.param_groups[0]["lr"], torch.Tensor) == as_tensor
        assert float(again.param_groups[0]["lr"]) == pytest.approx(float(opt.param_groups[0]["lr"]))
        again_sched.step()
        sched_lr = float(again.param_groups[0]["lr"])
        assert 0 < sched_lr < float(opt.param_groups[0]["lr"])  # the cosine goes on from where it was
