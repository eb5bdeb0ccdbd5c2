"""The 2-D map of an embedding and its TensorBoard projector export.

- `project_2d`: UMAP (McInnes et al. 2018; the `umap-learn` package, an extra) or PCA (the top
  two principal axes), of at most `MAP_MAX_POINTS` points (a seeded sample above).
- `write_projector`: tensors.tsv, metadata.tsv, sprite.png and projector_config.pbtxt in the run's
  TensorBoard folder, so `tensorboard --logdir RUN/tensorboard` opens them in its projector; at
  most `PROJECTOR_MAX_POINTS` points (the first of the map's), a tab-separated file being large.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MAP_MAX_POINTS = 100_000
PROJECTOR_MAX_POINTS = 5_000
SPRITE_MAX_PX = 8192
"""TensorBoard's projector reads sprites up to 8192 x 8192 pixels."""
UMAP_NEIGHBOURS = 15


def umap_available() -> bool:
    spec = importlib.util.find_spec("umap")
    return spec is not None and spec.origin is not None  # not a leftover empty folder


def sample_points(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of at most `max_points` of range(n)."""
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:max_points].sort().values.numpy().astype(np.int64)


def pca_2d(x: Tensor) -> np.ndarray:
    """The rows of `x` on its top two principal axes (each axis' sign fixed: its largest
    loading positive), as float32 (N, 2)."""
    x = x.double()
    centred = x - x.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / max(1, x.shape[0] - 1)
    _, vectors = torch.linalg.eigh(cov)
    axes = vectors[:, -2:].flip(1)
    signs = torch.sign(axes.gather(0, axes.abs().argmax(dim=0, keepdim=True)))
    axes = axes * torch.where(signs == 0, torch.ones_like(signs), signs)
    return (centred @ axes).float().cpu().numpy()


def umap_2d(x: Tensor, seed: int) -> np.ndarray:
    import umap  # the optional extra

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state", numba notes
        reducer = umap.UMAP(n_components=2, n_neighbors=min(UMAP_NEIGHBOURS, max(2, x.shape[0] - 1)),
                            min_dist=0.1, metric="euclidean", random_state=seed)
        return np.asarray(reducer.fit_transform(x.float().cpu().numpy()), dtype=np.float32)


def project_2d(features: Tensor, method: str, seed: int = 0,
               max_points: int = MAP_MAX_POINTS) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(points (M, 2) float32, items (M,) int64, facts) for `method` "auto" (UMAP when installed,
    else PCA), "umap" (PCA with a warning when umap-learn is missing) or "pca"."""
    items = sample_points(int(features.shape[0]), max_points, seed)
    x = F.normalize(features[torch.as_tensor(items, device=features.device)].float(), dim=1)
    facts: dict[str, Any] = {"points": int(len(items)), "sampled": len(items) < features.shape[0]}
    use_umap = method == "umap" or (method == "auto" and umap_available())
    if use_umap and not umap_available():
        facts["warning"] = "umap-learn is not installed where the job ran, so the map is PCA's; " \
                           "pip install 'dcl-service[explore]' on the workers for UMAP"
        use_umap = False
    if use_umap and x.shape[0] < 4:
        use_umap = False  # UMAP needs a few neighbours
    points = umap_2d(x, seed) if use_umap else pca_2d(x)
    facts["method"] = "umap" if use_umap else "pca"
    return np.ascontiguousarray(points, dtype=np.float32), items, facts


def sprite(images: Tensor, side: int) -> np.ndarray:
    """A square grid of the images (uint8 (M, 3, S, S)) at `side` px, row-major, as (H, W, 3)."""
    m = int(images.shape[0])
    per_row = max(1, math.ceil(math.sqrt(m)))
    rows = math.ceil(m / per_row)
    out = np.zeros((rows * side, per_row * side, 3), np.uint8)
    for start in range(0, m, 1024):
        batch = images[start:start + 1024].float()
        if batch.shape[-1] != side:
            batch = F.interpolate(batch, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        tiles = batch.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for j, tile in enumerate(tiles):
            r, c = divmod(start + j, per_row)
            out[r * side:(r + 1) * side, c * side:(c + 1) * side] = tile
    return out


def write_projector(folder: Path, features: np.ndarray, items: np.ndarray, labels: np.ndarray | None,
                    classes: list[str] | None, images: Tensor | None) -> dict[str, Any]:
    """The projector files for `items` (rows of `features`); returns what was written."""
    from PIL import Image

    from dcl_core.files import atomic_open

    folder.mkdir(parents=True, exist_ok=True)
    items = items[:PROJECTOR_MAX_POINTS]
    with atomic_open(folder / "tensors.tsv", "wb") as handle:
        np.savetxt(handle, np.asarray(features[items], dtype=np.float32), fmt="%.5g", delimiter="\t")
    with atomic_open(folder / "metadata.tsv", "wb") as handle:
        lines = ["item\tlabel"]
        for item in items.tolist():
            label = "" if labels is None else int(labels[item])
            name = classes[label] if classes and label != "" and 0 <= label < len(classes) else label
            lines.append(f"{item}\t{str(name).replace(chr(9), ' ').replace(chr(10), ' ')}")
        handle.write(("\n".join(lines) + "\n").encode("utf-8"))
    config = ['embeddings {', '  tensor_name: "embeddings"', '  tensor_path: "tensors.tsv"',
              '  metadata_path: "metadata.tsv"']
    side = None
    if images is not None and len(items):
        side = int(min(images.shape[-1], 64, SPRITE_MAX_PX // math.ceil(math.sqrt(len(items)))))
        grid = sprite(images[torch.as_tensor(items, device=images.device)], side)
        with atomic_open(folder / "sprite.png", "wb") as handle:
            Image.fromarray(grid).save(handle, format="PNG")
        config += ['  sprite {', '    image_path: "sprite.png"', f'    single_image_dim: {side}',
                   f'    single_image_dim: {side}', '  }']
    config.append('}')
    with atomic_open(folder / "projector_config.pbtxt", "wb") as handle:
        handle.write(("\n".join(config) + "\n").encode("utf-8"))
    return {"points": int(len(items)), "sprite_px": side}
