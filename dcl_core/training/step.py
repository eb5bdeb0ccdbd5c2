"""One training step: the contrastive model (encoder + projection head), both views of a batch
in one augmentation pass, and the forward, loss, backward and optimiser step (compiled on a GPU)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from dcl_core.config import TrainConfig
from dcl_core.models.encoders import build_encoder, resolve_small_stem
from dcl_core.models.heads import ProjectionHead
from dcl_core.training.augment import SimCLRAugment
from dcl_core.training.device import autocast
from dcl_core.training.optim import lr_as_tensor

# CUDA graphs: at 32 px a ResNet-18 step is launch-bound (H100: 2.4x the views/s of the default mode).
COMPILE_MODE = "reduce-overhead"


class ContrastiveModel(nn.Module):
    """Encoder followed by the projection head. Shape: (B, 3, H, W) -> (B, projection_dim)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def build_model(config: TrainConfig, image_size: int) -> tuple[ContrastiveModel, bool]:
    small_stem = resolve_small_stem(config.small_stem, image_size, config.encoder)
    encoder = build_encoder(config.encoder, small_stem, image_size, config.encoder_kwargs)
    hidden = config.projection_hidden_dim or encoder.feature_dim
    head = ProjectionHead(encoder.feature_dim, hidden, config.projection_dim, config.projection_layers)
    return ContrastiveModel(encoder, head), small_stem


class Views:
    """batch uint8 (B, 3, H, W) -> both views (2B, 3, S, S) in one augmentation pass.

    One pass over the doubled batch halves the kernel launches that dominate at 32 px. A call
    is `render(batch, draw(batch))`: `draw` is the step's one random draw (from `gen`, into a
    static buffer), `render` the rest, pure tensor work a compiled step can capture.
    """

    def __init__(self, augment: SimCLRAugment, gen: torch.Generator):
        self.augment, self.gen = augment, gen
        self._uniform: torch.Tensor | None = None

    def draw(self, batch: torch.Tensor) -> torch.Tensor:
        n = 2 * batch.shape[0]
        if self._uniform is None or self._uniform.shape[0] != n or self._uniform.device != batch.device:
            self._uniform = self.augment.draw_uniform(n, batch.device, self.gen)
            return self._uniform
        return self.augment.draw_uniform(n, batch.device, self.gen, out=self._uniform)

    def render(self, batch: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        params = self.augment.params_from_uniform(uniform, batch.shape[2], batch.shape[3])
        return self.augment.apply(torch.cat([batch, batch]), params)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.render(batch, self.draw(batch))


def view_maker(augment: SimCLRAugment, gen: torch.Generator) -> Views:
    return Views(augment, gen)


def make_train_step(model, loss_fn, make_views, optimizer, scheduler, *, dtype, channels_last, compile=False,
                    compile_mode: str | None = None, scaler: torch.amp.GradScaler | None = None,
                    whole: bool = False):
    """One training step on a uint8 batch (B, 3, H, W) already on the device; returns the
    detached loss (still on the device: reading it is the caller's choice of sync point).

    `make_views` maps the batch to both views stacked (2B, 3, S, S): they go through the model
    as one batch. With `compile`, the model is compiled; with `whole` too (`make_views` a
    `Views`, no scaler), the whole step is: augmentation, model, loss, backward and optimiser
    step, with the learning rate a tensor the scheduler fills (a float would recompile), so
    only the random draw and the scheduler run outside the compiled graphs. If compilation
    fails at the first step, training falls back to eager with a warning. With a `scaler`
    (fp16), the loss is scaled before backward and a step whose gradients overflowed is
    skipped (GradScaler reads one flag from the device per step: fp16's price; bf16 has none).
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    whole = whole and compile and scaler is None
    lr_as_tensor(optimizer, whole)

    def forward_backward(net, views: torch.Tensor) -> torch.Tensor:
        views = views.contiguous(memory_format=fmt)
        with autocast(views.device, dtype):
            z0, z1 = net(views).chunk(2)
            loss = loss_fn(z0, z1)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss.detach()

    def with_schedule(body):
        def step(batch: torch.Tensor) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)  # outside any graph: dynamo does not trace it (no tensor work)
            loss = body(batch)
            scheduler.step()
            return loss

        return step

    eager = with_schedule(lambda batch: forward_backward(model, make_views(batch)))
    if not compile:
        return eager
    if whole:
        make_views.augment.prepare(next(model.parameters()).device)
        graph = torch.compile(lambda batch, uniform: forward_backward(model, make_views.render(batch, uniform)),
                              mode=compile_mode)

        def whole_step(batch: torch.Tensor) -> torch.Tensor:
            uniform = make_views.draw(batch)  # a generator cannot enter a graph: draw outside it
            if batch.is_cuda:  # a new CUDA-graph generation: the last step's loss was already read
                torch.compiler.cudagraph_mark_step_begin()
            return graph(batch, uniform)

        compiled = with_schedule(whole_step)
    else:
        net = torch.compile(model, mode=compile_mode)
        compiled = with_schedule(lambda batch: forward_backward(net, make_views(batch)))
    chosen = []

    def step(batch):
        if not chosen:
            try:
                out = compiled(batch)
                chosen.append(compiled)
                return out
            except Exception as exc:  # a compiler/toolchain problem must not kill a training run
                warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly", stacklevel=2)
                lr_as_tensor(optimizer, False)  # eager kernels take a float rate without a device read
                chosen.append(eager)
        return chosen[0](batch)

    return step
