"""Data sources: every `DatasetSpec` becomes one in-memory `ImageSet` of uint8 images, or,
for training on image files too large to hold, an `ImageStream` that decodes them batch by batch.

Sources (`DatasetSpec.source`):
- `builtin:digits`: scikit-learn's 1,797 8x8 handwritten digits (values 0..16 scaled to
  0..255, replicated to 3 channels), labels 0..9. Split: `train` is the first 1,437 images
  (80%), `test` the remaining 360, in scikit-learn's order (deterministic).
- `torchvision:NAME` (CIFAR10, CIFAR100, STL10, MNIST, FashionMNIST, SVHN): read from
  `DataEnv.torchvision_root` in torchvision's own layout; downloaded only when both
  `spec.download` and `DataEnv.allow_download` are true. STL10 uses its labelled splits.
- `dataset:ID`: an upload to the service, the folder `DataEnv.datasets_dir / ID` holding
  either `images/` (an extracted image tree) or `data.npz` (see `dataset_layout`; the
  service writes it with `dcl_core.data.stored.store_dataset`).
- a local path: an image folder, a .zip/.tar/.tar.gz/.tgz of one (extracted with
  `safe_extract` into `DataEnv.cache_dir/extracted/<sha256 of the file>`, or into a temporary
  folder removed after loading when there is no cache dir), or an .npz (`x` uint8 (N,H,W,C)
  or (N,H,W), optional integer `y` and string `classes`).

Image trees follow `dcl_core.data.tree.list_images` (class subfolders give labels). Files are
decoded by `dcl_core.data.decode` (Pillow's decoders for `IMAGE_FORMATS` only; JPEGs in
batches) in a thread pool straight into one preallocated array. With `image_size` set, images are centre-cropped to a square and resized
(Pillow bicubic for files; antialiased bilinear `F.interpolate` for tensor sources);
without it all images must share one square size. `max_images` keeps the first N images in
the source's order (for image trees: class by class, sorted paths).

Training opens its data with `open_images`: image files (a folder, an archive, a `dataset:ID`
image tree) stream from disk when `DatasetSpec.in_memory` is false, or when it is None and
their decoded size N*3*S*S is over `IN_MEMORY_MAX_BYTES` (`dcl_core.data.stream`); every
other source is in memory. A stream yields the same pixels in the same `epoch_order` as the in-memory set, so both
train to the same weights.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dcl_core.config import DatasetSpec
from dcl_core.data.archive import ARCHIVE_SUFFIXES, safe_extract
from dcl_core.data.catalog import DIGITS_TRAIN, TORCHVISION_FOLDERS
from dcl_core.data.imageset import ImageSet, load_files, load_tree, tree_files
from dcl_core.data.inspection import inspect_npz
from dcl_core.data.npz_rows import read_rows
from dcl_core.data.stored import dataset_layout
from dcl_core.data.stream import ImageStream, first_side, open_stream, should_stream
from dcl_core.errors import UserError
from dcl_core.files import sha256_file

LOCAL_ARCHIVE_MAX_BYTES = 1 << 40
LOCAL_ARCHIVE_MAX_FILES = 50_000_000
"""Caps for the CLI's own archives (uploads to the service are capped by the service)."""


@dataclass(frozen=True)
class DataEnv:
    """Where sources live, set by whoever runs the engine (the CLI, a worker)."""

    datasets_dir: Path | None = None
    torchvision_root: Path | None = None
    allow_download: bool = False
    cache_dir: Path | None = None


# --------------------------------------------------------------------------- entry points


def load_images(spec: DatasetSpec, env: DataEnv) -> ImageSet:
    """Loads the images a spec names (see the module docstring) as one uint8 ImageSet."""
    kind = spec.kind
    if kind == "builtin":
        return _load_digits(spec)
    if kind == "torchvision":
        return _load_torchvision(spec, env)
    with ExitStack() as stack:
        path = _file_source(spec, env, stack)
        if path.is_dir():
            return load_tree(path, spec, spec.source, env.cache_dir)
        return _load_npz(path, spec, spec.source)


def open_images(spec: DatasetSpec, env: DataEnv) -> ImageSet | ImageStream:
    """Training's data: an ImageStream for image files when `should_stream` says so (see the
    module docstring), else `load_images`."""
    if spec.kind in ("builtin", "torchvision") or spec.in_memory:
        return load_images(spec, env)
    keep = ExitStack()
    with keep:
        path = _file_source(spec, env, keep)
        if not path.is_dir():
            return _load_npz(path, spec, spec.source)
        paths, labels, classes = tree_files(path, spec)
        side = spec.image_size or first_side(paths)
        if not should_stream(spec.in_memory, len(paths), side):
            return load_files(paths, labels, classes, path, spec, spec.source, env.cache_dir)
        stream = open_stream(paths, labels, classes, path, spec, keep.pop_all())
    return stream


# --------------------------------------------------------------------------- tensor sources


def _center_square(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top:top + side, left:left + side]


def _finish_tensor(images: torch.Tensor, spec: DatasetSpec, source: str) -> torch.Tensor:
    """Resizes (N, 3, H, W) uint8 to spec.image_size in chunks, or checks it is square."""
    h, w = images.shape[-2:]
    size = spec.image_size
    if size is None:
        if h != w:
            raise UserError(f"{source}: images are {w}x{h}, not square; set image_size")
        return images.contiguous()
    if h == w == size:
        return images.contiguous()
    images = _center_square(images)
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8)
    side = images.shape[-1]
    chunk = max(1, (1 << 24) // (3 * side * side))
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _to_nchw3(x: np.ndarray | torch.Tensor, layout: str) -> torch.Tensor:
    """uint8 images to (N, 3, H, W): layout "NHW", "NHWC" or "NCHW"; grayscale replicated."""
    t = torch.as_tensor(x)
    if layout == "NHW":
        t = t.unsqueeze(1)
    elif layout == "NHWC":
        t = t.permute(0, 3, 1, 2)
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    return t


def _make_set(images, labels, classes, spec: DatasetSpec, layout: str, source: str) -> ImageSet:
    if spec.max_images is not None:
        images = images[: spec.max_images]
        labels = labels[: spec.max_images] if labels is not None else None
    t = _finish_tensor(_to_nchw3(images, layout), spec, source)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64).clone() if labels is not None else None
    return ImageSet(images=t.contiguous(), labels=y, classes=classes, source=source)


def _load_digits(spec: DatasetSpec) -> ImageSet:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (1797, 8, 8)
    y = digits.target.astype(np.int64)
    part = slice(0, DIGITS_TRAIN) if spec.split == "train" else slice(DIGITS_TRAIN, None)
    classes = [str(i) for i in range(10)]
    return _make_set(x[part], y[part], classes, spec, "NHW", spec.source)


def _load_torchvision(spec: DatasetSpec, env: DataEnv) -> ImageSet:
    name = spec.source.partition(":")[2]
    if env.torchvision_root is None:
        raise UserError(f"{spec.source}: no torchvision data folder is configured here")
    root = Path(env.torchvision_root)
    if spec.download and not env.allow_download:
        raise UserError(
            f"{spec.source}: download: true is not allowed here (the server does not allow downloads); "
            f"put the files in {root / TORCHVISION_FOLDERS[name]} instead"
        )
    download = spec.download and env.allow_download
    import torchvision.datasets as tvd

    train = spec.split == "train"
    try:
        if name in ("CIFAR10", "CIFAR100", "MNIST", "FashionMNIST"):
            ds = getattr(tvd, name)(str(root), train=train, download=download)
        else:  # STL10, SVHN
            ds = getattr(tvd, name)(str(root), split=spec.split, download=download)
    except RuntimeError as exc:
        if download:
            raise UserError(f"{spec.source}: downloading into {root} failed: {exc}") from None
        raise UserError(
            f"{spec.source}: the {spec.split} files are missing or damaged; put torchvision's {name} "
            f"files in {(root / TORCHVISION_FOLDERS[name]).resolve()}, or set download: true "
            "(needs the server to allow downloads)"
        ) from None
    except OSError as exc:
        raise UserError(f"{spec.source}: cannot read the files under {root}: {exc}") from None
    if name in ("CIFAR10", "CIFAR100"):
        x, y, layout = ds.data, np.asarray(ds.targets), "NHWC"
    elif name in ("MNIST", "FashionMNIST"):
        x, y, layout = ds.data.numpy(), ds.targets.numpy(), "NHW"
    else:  # STL10, SVHN: (N, 3, H, W)
        x, y, layout = ds.data, np.asarray(ds.labels), "NCHW"
    classes = list(getattr(ds, "classes", None) or [str(i) for i in range(int(y.max()) + 1)])
    return _make_set(np.ascontiguousarray(x), y, classes, spec, layout, spec.source)


def _load_npz(path: Path, spec: DatasetSpec, source: str) -> ImageSet:
    summary = inspect_npz(path)
    if spec.max_images is not None:  # only those rows, never the whole array (`dcl show-augment`)
        with zipfile.ZipFile(path) as archive:
            first = range(min(spec.max_images, summary.num_images))
            x = read_rows(archive, "x", first)[1]
            y = read_rows(archive, "y", first)[1].astype(np.int64) if summary.labelled else None
    else:
        with np.load(path, allow_pickle=False) as npz:
            x = npz["x"]
            y = npz["y"].astype(np.int64) if "y" in npz.files else None
    layout = "NHW" if x.ndim == 3 else "NHWC"
    return _make_set(x, y, summary.classes, spec, layout, source)


# --------------------------------------------------------------------------- files

def _extract(path: Path, env: DataEnv, stack: ExitStack) -> Path:
    """Extracts an archive into the cache (kept), or into a temporary folder removed when stack closes."""
    limits = dict(max_total_bytes=LOCAL_ARCHIVE_MAX_BYTES, max_files=LOCAL_ARCHIVE_MAX_FILES)
    if env.cache_dir is not None:
        dest = Path(env.cache_dir) / "extracted" / sha256_file(path)[:32]
        if not dest.is_dir():
            try:
                safe_extract(path, dest, **limits)
            except OSError:
                # Another process may have extracted the same archive meanwhile: use its copy.
                if not dest.is_dir():
                    raise
        return dest
    dest = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dcl-extract-"))) / "tree"
    safe_extract(path, dest, **limits)
    return dest


def _file_source(spec: DatasetSpec, env: DataEnv, stack: ExitStack) -> Path:
    """The image folder or .npz file that a path or `dataset:ID` source names (archives extracted)."""
    if spec.kind == "dataset":
        dataset_id = spec.source.partition(":")[2]
        if env.datasets_dir is None:
            raise UserError(f"{spec.source}: uploaded datasets are not available here (no datasets folder)")
        folder = Path(env.datasets_dir) / dataset_id
        if not folder.is_dir():
            raise UserError(f"{spec.source}: no such dataset; upload one with POST /v1/datasets")
        return dataset_layout(folder)
    path = Path(os.path.expanduser(spec.source))
    if path.is_dir():
        return path
    if not path.exists():
        raise UserError(f"dataset source {spec.source!r}: no such file or folder")
    name = path.name.lower()
    if name.endswith(".npz"):
        return path
    if name.endswith(ARCHIVE_SUFFIXES):
        return _extract(path, env, stack)
    raise UserError(
        f"dataset source {spec.source!r}: not an image folder, a .zip/.tar/.tar.gz/.tgz or an .npz"
    )
