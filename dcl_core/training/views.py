"""A picture of the augmentation (`dcl show-augment`): images beside their SimCLR views, as a PNG."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from dcl_core.training.augment import SimCLRAugment
from dcl_core.training.image_ops import check_images, constant, resize, to_float

__all__ = ["views_grid", "save_png"]


def views_grid(
    images: Tensor,
    augment: SimCLRAugment,
    n_views: int = 2,
    generator: torch.Generator | None = None,
    padding: int = 2,
) -> Tensor:
    """A picture of the augmentation: uint8 (3, H', W') on the CPU.

    One row per image: the original resized to `augment.image_size`, then `n_views` views
    (de-normalised), separated and framed by `padding` white pixels. With S = image_size and
    p = padding: H' = B * (S + p) + p and W' = (n_views + 1) * (S + p) + p.
    """
    check_images(images)
    if n_views < 0 or padding < 0:
        raise ValueError("n_views and padding must be >= 0")
    size = augment.image_size
    with torch.no_grad():
        cells = [resize(to_float(images), size).to(torch.float32)]
        mean = constant(augment.mean, cells[0]).view(1, 3, 1, 1)
        std = constant(augment.std, cells[0]).view(1, 3, 1, 1)
        for _ in range(n_views):
            cells.append(augment(images, generator).to(torch.float32) * std + mean)
        grid = torch.stack(cells, dim=1).clamp_(0.0, 1.0)  # (B, V+1, 3, S, S)
        b, v = grid.shape[:2]
        grid = F.pad(grid, (padding, 0, padding, 0), value=1.0)  # left/top of every cell
        side = size + padding
        grid = grid.permute(2, 0, 3, 1, 4).reshape(3, b * side, v * side)
        grid = F.pad(grid, (0, padding, 0, padding), value=1.0)  # the right/bottom frame
        return grid.mul_(255.0).round_().to(torch.uint8).cpu()


def save_png(grid: Tensor, path: str | Path) -> Path:
    """Write a uint8 (3, H, W) image tensor as a PNG (PIL); returns the path."""
    from PIL import Image

    if grid.dtype != torch.uint8 or grid.dim() != 3 or grid.shape[0] != 3:
        raise ValueError(f"expected a uint8 (3, H, W) tensor, got {grid.dtype} {tuple(grid.shape)}")
    path = Path(path)
    array = grid.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(array).save(path, format="PNG")
    return path
