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


def view_maker(augment: SimCLRAugment, gen: torch.Generator):
    """batch uint8 (B, 3, H, W) -> both views (2B, 3, S, S) in one augmentation pass.

    One pass over the doubled batch halves the kernel launches that dominate at 32 px. The
    augmentation stays eager: under CUDA graphs its cached constants would be overwritten.
    """

    def views(batch: torch.Tensor) -> torch.Tensor:
        return augment(torch.cat([batch, batch]), gen)

    return views


def make_train_step(model, loss_fn, make_views, optimizer, scheduler, *, dtype, channels_last, compile=False,
                    compile_mode: str | None = None, scaler: torch.amp.GradScaler | None = None):
    """One training step on a uint8 batch (B, 3, H, W) already on the device; returns the
    detached loss (still on the device: reading it is the caller's choice of sync point).

    `make_views` maps the batch to both views stacked (2B, 3, S, S): they go through the model
    as one batch. With `compile`, the model is compiled; if compilation fails at the first
    step, training falls back to eager with a warning. With a `scaler` (fp16), the loss is
    scaled before backward and a step whose gradients overflowed is skipped (GradScaler reads
    one flag from the device per step: fp16's price; bf16 has none).
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def build(net):
        def step(batch: torch.Tensor) -> torch.Tensor:
            views = make_views(batch).contiguous(memory_format=fmt)
            with autocast(views.device, dtype):
                z0, z1 = net(views).chunk(2)
                loss = loss_fn(z0, z1)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            return loss.detach()

        return step

    eager = build(model)
    if not compile:
        return eager
    compiled = build(torch.compile(model, mode=compile_mode))
    chosen = []

    def step(batch):
        if not chosen:
            try:
                out = compiled(batch)
                chosen.append(compiled)
                return out
            except Exception as exc:  # a compiler/toolchain problem must not kill a training run
                warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly", stacklevel=2)
                chosen.append(eager)
        return chosen[0](batch)

    return step
