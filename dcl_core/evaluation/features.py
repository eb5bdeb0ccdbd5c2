"""Features of a frozen encoder: uint8 images -> float32 features, batched on the device
(optionally under autocast), and the encoder and preprocessing set up for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn

from dcl_core.errors import UserError
from dcl_core.training.device import autocast

if TYPE_CHECKING:
    from dcl_core.config import DatasetSpec

__all__ = ["extract_features", "prepare_for_inference", "spec_at_encoder_size", "eval_transform"]


@torch.inference_mode()
def extract_features(
    encoder: nn.Module,
    images: Tensor,
    transform: Callable[[Tensor], Tensor],
    *,
    batch_size: int = 512,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    check_stop: Callable[[], None] | None = None,
) -> Tensor:
    """Features of `images` (uint8, (N, 3, H, W)) as float32 (N, D) on `device`.

    The encoder runs in eval mode (its previous mode is restored afterwards) under
    autocast when `dtype` is given. Host images are copied per batch, from pinned memory
    with non_blocking copies when the device is a GPU, so copies overlap with compute.
    `check_stop` (see `hooks.stop_check`) is called before every batch.
    """
    device = torch.device(device)
    if images.dim() != 4 or images.shape[1] != 3:
        raise UserError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    num = images.shape[0]
    feature_dim = getattr(encoder, "feature_dim", None)
    out: Tensor | None = None
    if feature_dim is not None:
        out = torch.empty(num, int(feature_dim), device=device, dtype=torch.float32)
    pin = device.type == "cuda" and images.device.type == "cpu" and not images.is_pinned()
    channels_last = device.type == "cuda" and _is_channels_last(encoder)
    was_training = encoder.training
    encoder.eval()
    try:
        for start in range(0, num, batch_size):
            if check_stop is not None:
                check_stop()
            batch = images[start : start + batch_size]
            if batch.device != device:
                if pin:
                    batch = batch.pin_memory()
                batch = batch.to(device, non_blocking=True)
            x = transform(batch)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, dtype):
                feats = encoder(x)
            feats = feats.float()
            if out is None:
                out = torch.empty(num, feats.shape[1], device=device, dtype=torch.float32)
            out[start : start + feats.shape[0]] = feats
    finally:
        encoder.train(was_training)
    if out is None:  # no images and no feature_dim to size an empty result
        out = torch.empty(0, 0, device=device, dtype=torch.float32)
    return out


def _is_channels_last(module: nn.Module) -> bool:
    """Whether the module's first 4-d weight (its first conv) is stored channels_last."""
    for param in module.parameters():
        if param.dim() == 4:
            return param.is_contiguous(memory_format=torch.channels_last) and not param.is_contiguous()
    return False


def prepare_for_inference(encoder: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode; on a GPU also channels_last, which cuDNN runs faster under bf16 (ResNet-18
    at 32 px on an H100: 60k images in 0.34 s instead of 0.55 s at batch 1024)."""
    encoder.eval()
    if torch.device(device).type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder


def spec_at_encoder_size(spec: "DatasetSpec", meta: dict) -> "DatasetSpec":
    """The spec, at the encoder's input size unless the spec sets its own."""
    if spec.image_size is not None:
        return spec
    return spec.model_copy(update={"image_size": int(meta["image_size"])})


def eval_transform(image_size: int, meta: dict, device: torch.device):
    """The encoder's evaluation preprocessing (its normalisation) at `image_size`, on `device`."""
    from dcl_core.training.image_ops import EvalTransform

    transform = EvalTransform(int(image_size), tuple(meta["mean"]), tuple(meta["std"]))
    return transform.to(device) if hasattr(transform, "to") else transform
