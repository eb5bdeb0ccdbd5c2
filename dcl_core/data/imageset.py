"""The in-memory image set (`ImageSet`: uint8 images, labels, classes), the epoch order that
every way of training shares, and image files decoded into one set through the decode cache."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dcl_core.config import DatasetSpec
from dcl_core.data import decode, decode_cache
from dcl_core.data.tree import list_images
from dcl_core.errors import UserError


@dataclass
class ImageSet:
    """Images in memory. Shape: images (N, 3, H, W) uint8, contiguous; labels (N,) int64 or None."""

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str] | None
    source: str

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        """The side of the (square) images."""
        h, w = self.images.shape[-2:]
        if h != w:
            raise UserError(f"{self.source}: images are {w}x{h}, not square; set image_size")
        return int(h)

    def channel_stats(self, max_images: int = 10_000, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) in [0, 1] units over up to `max_images` evenly spaced images.
        A constant channel (a flat colour, a blank channel) gets std MIN_CHANNEL_STD, not 0.

        Accumulated in float64 chunk by chunk (no full-size float copy).
        """
        n = self.num_images
        if n == 0:
            raise UserError(f"{self.source}: no images to measure")
        index = sample_index(n, max_images)
        device = self.images.device if self.images.device.type in ("cpu", "cuda") else torch.device("cpu")
        total = torch.zeros(3, dtype=torch.float64, device=device)
        total_sq = torch.zeros(3, dtype=torch.float64, device=device)
        for start in range(0, len(index), chunk):
            idx = index[start:start + chunk].to(self.images.device)
            x = self.images[idx].to(device=device, dtype=torch.float64)
            total += x.sum(dim=(0, 2, 3))
            total_sq += x.square().sum(dim=(0, 2, 3))
        count = len(index) * self.images.shape[2] * self.images.shape[3]
        mean = total / count
        var = (total_sq / count - mean.square()).clamp_min(0)
        mean_t = tuple(float(v) / 255 for v in mean.tolist())
        std_t = tuple(max(math.sqrt(float(v)) / 255, MIN_CHANNEL_STD) for v in var.tolist())
        return mean_t, std_t


MIN_CHANNEL_STD = 1 / 255
"""One intensity step: the least std a measured channel gets, so that constant images
(a 1x1 upload, a red-only dataset) normalise to 0 instead of failing on a division by 0."""


def sample_index(n: int, max_images: int) -> torch.Tensor:
    """Up to max_images evenly spaced indices of n, first and last included. Shape: (min(n, max_images),)."""
    if n > max_images:
        return torch.linspace(0, n - 1, max_images, dtype=torch.float64).round().long()
    return torch.arange(n)


def epoch_order(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's image order: a function of (seed, epoch) alone, so a resumed run (and every
    DDP rank) draws the same order without carrying sampler state. Shape: (num_images,) int64."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_images, generator=gen)


def tree_files(root: Path, spec: DatasetSpec) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """`tree.list_images`, cut to spec.max_images; an empty tree is a UserError."""
    paths, labels, classes = list_images(root)
    if spec.max_images is not None:
        paths = paths[: spec.max_images]
        labels = labels[: spec.max_images] if labels is not None else None
    if not paths:
        raise UserError(
            f"{spec.source}: no images found (expected image files directly in the folder or in class subfolders)"
        )
    return paths, labels, classes


def load_files(paths: list[Path], labels: list[int] | None, classes: list[str] | None,
               base: Path, spec: DatasetSpec, source: str, cache_dir: Path | None = None) -> ImageSet:
    """Decode the files into one ImageSet (see `dcl_core.data.decode`); with `cache_dir`, the decoded
    tensor is read from, or written to, the decode cache there (`dcl_core.data.decode_cache`)."""
    device = "cuda" if decode.gpu_decode_available() else "cpu"
    cached = None
    if cache_dir is not None:
        cached_file = decode_cache.cache_path(cache_dir, decode_cache.cache_key(paths, base, spec.image_size,
                                                                                spec.skip_corrupt, device))
        cached = decode_cache.load_cached(cached_file, len(paths))
    if cached is not None:
        out, kept = cached
    else:
        out, kept = decode.decode_images(paths, base, spec.image_size, spec.skip_corrupt, source, device)
        if cache_dir is not None:
            decode_cache.save_cached(cached_file, out, kept)
    y = np.asarray(labels, dtype=np.int64)[kept] if labels is not None else None
    return ImageSet(images=torch.from_numpy(out), labels=torch.from_numpy(y) if y is not None else None,
                    classes=classes, source=source)


def load_tree(root: Path, spec: DatasetSpec, source: str, cache_dir: Path | None = None) -> ImageSet:
    """Every image of a tree (`tree_files`) decoded into one ImageSet (`load_files`)."""
    paths, labels, classes = tree_files(root, spec)
    return load_files(paths, labels, classes, root, spec, source, cache_dir)
