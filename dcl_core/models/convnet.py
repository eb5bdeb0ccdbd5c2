"""`convnet_small`: a four-block convnet, quick on a CPU, for tests and smoke runs."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
