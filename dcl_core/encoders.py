"""Image encoders (randomly initialised; nothing is downloaded).

`build_encoder(name, small_stem)` returns a module mapping (B, 3, H, W) float images to
(B, feature_dim) features, with an int attribute `feature_dim`:

- "resnet18", "resnet34" (512) and "resnet50" (2048): torchvision's ResNets (He et al. 2016)
  with `fc` replaced by `nn.Identity`, so the state_dict keys are torchvision's minus `fc.*`.
  `small_stem` (SimCLR and DCL on CIFAR) swaps conv1 for a 3x3 stride-1 convolution and drops
  the max-pool, keeping the spatial resolution of small images.
- "convnet_small" (256): four conv3x3-BN-ReLU blocks (32, 64, 128, 256 channels) with stride-2
  downsampling, then global average pooling; quick on a CPU, for tests and smoke runs. With
  `small_stem` its first block has stride 1 (the other three still halve the resolution),
  without it all four blocks have stride 2.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

from dcl_core.config import ENCODERS
from dcl_core.errors import UserError

__all__ = ["build_encoder", "resolve_small_stem", "ConvNetSmall"]

_RESNETS = {
    "resnet18": (torchvision.models.resnet18, 512),
    "resnet34": (torchvision.models.resnet34, 512),
    "resnet50": (torchvision.models.resnet50, 2048),
}


def resolve_small_stem(setting: bool | None, image_size: int) -> bool:
    """The config's `small_stem`: an explicit choice wins; None means on for images <= 64 px."""
    if setting is None:
        return image_size <= 64
    return bool(setting)


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ConvNetSmall(nn.Module):
    """Four conv3x3-BN-ReLU blocks (32-64-128-256 channels) + global average pool -> (B, 256).

    Every block halves the resolution, except the first one when `small_stem` is set.
    """

    feature_dim = 256

    def __init__(self, small_stem: bool = False) -> None:
        super().__init__()
        widths = (32, 64, 128, 256)
        strides = (1 if small_stem else 2, 2, 2, 2)
        blocks, in_ch = [], 3
        for out_ch, stride in zip(widths, strides):
            blocks.append(_conv_bn_relu(in_ch, out_ch, stride))
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


def build_encoder(name: str, small_stem: bool) -> nn.Module:
    """A randomly initialised encoder by name; see the module docstring for the choices.

    The returned module has an int attribute `feature_dim` and maps (B, 3, H, W) -> (B, feature_dim).
    Raises UserError for an unknown name.
    """
    if name not in ENCODERS:
        raise UserError(f"unknown encoder {name!r}; choose one of {list(ENCODERS)}")
    if name == "convnet_small":
        return ConvNetSmall(small_stem=small_stem)
    factory, feature_dim = _RESNETS[name]
    model = factory(weights=None)
    model.fc = nn.Identity()
    if small_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    model.feature_dim = feature_dim
    return model
