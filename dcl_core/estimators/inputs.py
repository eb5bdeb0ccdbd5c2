"""What the estimators accept as X: uint8 images as a numpy array or a torch tensor, (N, H, W, C),
(N, C, H, W) or (N, H, W) with C 1 or 3, or a data source (a folder, an archive or .npz path, a
dataset spec string such as "builtin:digits", or a DatasetSpec / its dict).

Training reads its data through the engine's sources, so an array is written as an .npz (the
engine's own format) into the run folder for the length of the fit: the run resumes from it
and trains to the same weights as from a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from dcl_core.config import DatasetSpec
from dcl_core.data.sources import DataEnv, load_images
from dcl_core.errors import UserError
from dcl_core.evaluation.features import spec_at_encoder_size

FIT_IMAGES = "fit-images.npz"
"""The array given to fit, in the run folder while the fit runs (removed afterwards)."""

_SOURCE_TYPES = (str, os.PathLike, dict, DatasetSpec)


def is_source(X: Any) -> bool:
    return isinstance(X, _SOURCE_TYPES)


def source_spec(X: Any, image_size: int | None) -> DatasetSpec:
    """The DatasetSpec that X names; the `image_size` parameter fills the spec's when it has none."""
    if isinstance(X, DatasetSpec):
        raw = X.model_dump()
    elif isinstance(X, dict):
        raw = dict(X)
    else:
        raw = {"source": os.fspath(X)}
    if image_size is not None and raw.get("image_size") is None:
        raw["image_size"] = image_size
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        details = []
        for err in exc.errors():
            field = ".".join(map(str, err["loc"]))
            given = f"image_size={image_size!r}" if field == "image_size" and image_size is not None else f"X={X!r}"
            details.append(f"{given}: {field + ': ' if field else ''}{err['msg']}")
        raise UserError("; ".join(details)) from None


def image_array(X: Any) -> tuple[np.ndarray | torch.Tensor, str]:
    """X as a uint8 numpy array or CPU tensor, and its layout: "NHW", "NHWC" or "NCHW"."""
    if hasattr(X, "toarray") or (isinstance(X, torch.Tensor) and X.layout != torch.strided):  # scipy.sparse, torch.sparse
        raise TypeError("X is a sparse matrix; sparse input is not supported: pass dense uint8 images")
    if isinstance(X, torch.Tensor):
        array: np.ndarray | torch.Tensor = X.detach().cpu()
        dtype_ok, dtype = X.dtype == torch.uint8, str(X.dtype)
    else:
        array = np.asarray(X)
        dtype_ok, dtype = array.dtype == np.uint8, str(array.dtype)
    shape = tuple(array.shape)
    if len(shape) == 2:
        raise UserError(
            f"X has shape {shape}: a table of features, not images; pass images (N, H, W), (N, H, W, C) or "
            "(N, C, H, W), e.g. X.reshape(-1, 8, 8) for flattened 8x8 images"
        )
    if len(shape) not in (3, 4):
        raise UserError(f"X has shape {shape}; pass images as (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if not dtype_ok:
        raise UserError(
            f"X has dtype {dtype}; pass uint8 images (values 0..255), e.g. (X * 255).round().astype(np.uint8) "
            "for values in [0, 1]"
        )
    if shape[0] == 0:
        raise UserError(f"X has shape {shape}: no images")
    if len(shape) == 3:
        return array, "NHW"
    if shape[1] in (1, 3):
        return array, "NCHW"
    if shape[3] in (1, 3):
        return array, "NHWC"
    raise UserError(
        f"X has shape {shape}: images need 1 or 3 channels, first (N, C, H, W) or last (N, H, W, C)"
        + ("; drop the alpha channel, e.g. X[..., :3]" if 4 in (shape[1], shape[3]) else "")
    )


def write_fit_images(images: tuple[np.ndarray | torch.Tensor, str], path: Path) -> None:
    """`image_array`'s (array, layout) as the engine's .npz: `x` uint8 (N, H, W, C) or (N, H, W)."""
    array, layout = images
    if isinstance(array, torch.Tensor):
        array = array.numpy()
    if layout == "NCHW":
        array = array.transpose(0, 2, 3, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(handle, x=array)


def transform_images(X: Any, meta: dict, env: DataEnv) -> torch.Tensor:
    """X as uint8 (N, 3, H, W) for the encoder: a source is loaded at the encoder's input size
    (unless its spec sets one), as the embed job does; non-square arrays are centre-cropped."""
    if is_source(X):
        return load_images(spec_at_encoder_size(source_spec(X, None), meta), env).images
    array, layout = image_array(X)
    if isinstance(array, np.ndarray):
        # torch warns about (and may write to) read-only buffers such as a read-only memmap
        array = torch.from_numpy(array if array.flags.writeable else array.copy())
    if layout == "NHW":
        array = array.unsqueeze(1)
    elif layout == "NHWC":
        array = array.permute(0, 3, 1, 2)
    if array.shape[1] == 1:
        array = array.expand(-1, 3, -1, -1)
    h, w = array.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return array[..., top:top + side, left:left + side]


def labels_of(y: Any, n: int) -> tuple[torch.Tensor, int]:
    """Any 1-D labels (ints, strings...) as class indices 0..K-1, and K."""
    if y is None:
        raise UserError("score(X, y) needs y, one label per image")
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise UserError(f"y has shape {y.shape}; expected one label per image: ({n},)")
    classes, index = np.unique(y, return_inverse=True)
    return torch.from_numpy(index.astype(np.int64)), len(classes)
