"""Data sources: every `DatasetSpec` becomes one in-memory `ImageSet` of uint8 images.

Sources (`DatasetSpec.source`):
- `builtin:digits`: scikit-learn's 1,797 8x8 handwritten digits (values 0..16 scaled to
  0..255, replicated to 3 channels), labels 0..9. Split: `train` is the first 1,437 images
  (80%), `test` the remaining 360, in scikit-learn's order (deterministic).
- `torchvision:NAME` (CIFAR10, CIFAR100, STL10, MNIST, FashionMNIST, SVHN): read from
  `DataEnv.torchvision_root` in torchvision's own layout; downloaded only when both
  `spec.download` and `DataEnv.allow_download` are true. STL10 uses its labelled splits.
- `dataset:ID`: an upload to the service, the folder `DataEnv.datasets_dir / ID` holding
  either `images/` (an extracted image tree) or `data.npz` (see `dataset_layout`; the
  service writes it with `dcl_core.archive.store_dataset`).
- a local path: an image folder, a .zip/.tar/.tar.gz/.tgz of one (extracted with
  `safe_extract` into `DataEnv.cache_dir/extracted/<sha256 of the file>`, or into a temporary
  folder removed after loading when there is no cache dir), or an .npz (`x` uint8 (N,H,W,C)
  or (N,H,W), optional integer `y` and string `classes`).

Image trees follow `dcl_core.archive.list_images` (class subfolders give labels). Files are
decoded with Pillow (only `archive.IMAGE_FORMATS`) in a thread pool straight into one
preallocated array. With `image_size` set, images are centre-cropped to a square and resized
(Pillow bicubic for files; antialiased bilinear `F.interpolate` for tensor sources);
without it all images must share one square size. `max_images` keeps the first N images in
the source's order (for image trees: class by class, sorted paths).
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from dcl_core import archive
from dcl_core.archive import dataset_layout
from dcl_core.config import DatasetSpec
from dcl_core.errors import UserError
from dcl_core.files import sha256_file

__all__ = ["DataEnv", "ImageSet", "load_images", "dataset_layout"]

DIGITS_TRAIN = 1437
"""builtin:digits: the first 1,437 of scikit-learn's 1,797 images are `train`, the rest `test`."""

LOCAL_ARCHIVE_MAX_BYTES = 1 << 40
LOCAL_ARCHIVE_MAX_FILES = 50_000_000
"""Caps for the CLI's own archives (uploads to the service are capped by the service)."""

# torchvision: where each dataset's files lie under the root, as torchvision itself lays them out.
_TORCHVISION_FOLDERS = {
    "CIFAR10": "cifar-10-batches-py",
    "CIFAR100": "cifar-100-python",
    "STL10": "stl10_binary",
    "MNIST": "MNIST/raw",
    "FashionMNIST": "FashionMNIST/raw",
    "SVHN": ".",
}


@dataclass(frozen=True)
class DataEnv:
    """Where sources live, set by whoever runs the engine (the CLI, a worker)."""

    datasets_dir: Path | None = None
    torchvision_root: Path | None = None
    allow_download: bool = False
    cache_dir: Path | None = None


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

        Accumulated in float64 chunk by chunk (no full-size float copy).
        """
        n = self.num_images
        if n == 0:
            raise UserError(f"{self.source}: no images to measure")
        if n > max_images:
            index = torch.linspace(0, n - 1, max_images, dtype=torch.float64).round().long()
        else:
            index = torch.arange(n)
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
        std_t = tuple(math.sqrt(float(v)) / 255 for v in var.tolist())
        return mean_t, std_t


# --------------------------------------------------------------------------- entry point


def load_images(spec: DatasetSpec, env: DataEnv) -> ImageSet:
    """Loads the images a spec names (see the module docstring) as one uint8 ImageSet."""
    kind = spec.kind
    if kind == "builtin":
        return _load_digits(spec)
    if kind == "torchvision":
        return _load_torchvision(spec, env)
    if kind == "dataset":
        return _load_stored(spec, env)
    return _load_path(spec, env)


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
            f"put the files in {root / _TORCHVISION_FOLDERS[name]} instead"
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
            f"files in {(root / _TORCHVISION_FOLDERS[name]).resolve()}, or set download: true "
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
    summary = archive.inspect_npz(path)
    with np.load(path, allow_pickle=False) as npz:
        x = npz["x"]
        y = npz["y"].astype(np.int64) if "y" in npz.files else None
    layout = "NHW" if x.ndim == 3 else "NHWC"
    return _make_set(x, y, summary.classes, spec, layout, source)


# --------------------------------------------------------------------------- files


def _decode_into(path: Path, out: np.ndarray, size: int | None) -> tuple[int, int]:
    """Decodes one file into out (3, S, S) uint8; returns the decoded (width, height).

    Without size, the image must match out's size exactly (else its size is returned unchanged
    and nothing is written). Raises archive.CorruptImage.
    """
    draft = (size, size) if size is not None else None
    im, _ = archive.decode_image(path, draft_size=draft)
    try:
        if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: show it as a viewer would
            im = ImageOps.exif_transpose(im)
    except Exception:
        pass
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        scale = 255.0 / 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 1.0
        im = Image.fromarray(np.clip(a * scale, 0, 255).round().astype(np.uint8), "L")
    if im.mode != "RGB":
        im = im.convert("RGB")
    w, h = im.size
    if size is None:
        if (h, w) != out.shape[1:]:
            return w, h
    elif (w, h) != (size, size):
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        im = im.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side),
                       reducing_gap=3.0)
    out[...] = np.asarray(im).transpose(2, 0, 1)
    return w, h


def _load_files(paths: list[Path], labels: list[int] | None, classes: list[str] | None,
                base: Path, spec: DatasetSpec, source: str) -> ImageSet:
    if spec.max_images is not None:
        paths = paths[: spec.max_images]
        labels = labels[: spec.max_images] if labels is not None else None
    if not paths:
        raise UserError(f"{source}: no images found (expected image files directly in the folder or in class subfolders)")

    def rel(p: Path) -> str:
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            return str(p)

    size = spec.image_size
    n = len(paths)
    corrupt: dict[int, str] = {}
    if size is None:
        # The native size: the first readable image's; every other must match it.
        for i, p in enumerate(paths):
            try:
                im, native = archive.decode_image(p)
                im.close()
                break
            except archive.CorruptImage as exc:
                corrupt[i] = f"{rel(p)} ({exc})"
        else:
            if not spec.skip_corrupt:
                raise archive.corrupt_error(corrupt.values(), len(corrupt))
            raise UserError(f"{source}: none of the {n} image files can be read")
        w, h = native
        if w != h:
            raise UserError(f"{source}: images are {w}x{h} ({rel(p)}), not square; set image_size")
        side = w
    else:
        side = size
    out = np.empty((n, 3, side, side), dtype=np.uint8)

    def work(i: int) -> tuple[int, int] | str:
        try:
            return _decode_into(paths[i], out[i], size)
        except archive.CorruptImage as exc:
            return f"{rel(paths[i])} ({exc})"

    results = archive.parallel_map(work, n)
    corrupt = {i: r for i, r in enumerate(results) if isinstance(r, str)}
    if corrupt and not spec.skip_corrupt:
        raise archive.corrupt_error(corrupt.values(), len(corrupt))
    if size is None:
        other = [(i, r) for i, r in enumerate(results) if not isinstance(r, str) and r != (side, side)]
        if other:
            i, (w, h) = other[0]
            raise UserError(
                f"{source}: images have different sizes ({rel(paths[0])} is {side}x{side}, "
                f"{rel(paths[i])} is {w}x{h}, {len(other)} differ); set image_size"
            )
    y = np.asarray(labels, dtype=np.int64) if labels is not None else None
    if corrupt:
        keep = np.array([i not in corrupt for i in range(n)])
        if not keep.any():
            raise UserError(f"{source}: none of the {n} image files can be read")
        out = out[keep]
        y = y[keep] if y is not None else None
    images = torch.from_numpy(out)
    return ImageSet(images=images, labels=torch.from_numpy(y) if y is not None else None,
                    classes=classes, source=source)


def _load_tree(root: Path, spec: DatasetSpec, source: str) -> ImageSet:
    paths, labels, classes = archive.list_images(root)
    return _load_files(paths, labels, classes, root, spec, source)


def _load_archive(path: Path, spec: DatasetSpec, env: DataEnv) -> ImageSet:
    limits = dict(max_total_bytes=LOCAL_ARCHIVE_MAX_BYTES, max_files=LOCAL_ARCHIVE_MAX_FILES)
    with ExitStack() as stack:
        if env.cache_dir is not None:
            dest = Path(env.cache_dir) / "extracted" / sha256_file(path)[:32]
            if not dest.is_dir():
                try:
                    archive.safe_extract(path, dest, **limits)
                except OSError:
                    # Another process may have extracted the same archive meanwhile: use its copy.
                    if not dest.is_dir():
                        raise
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dcl-extract-")))
            dest = tmp / "tree"
            archive.safe_extract(path, dest, **limits)
        return _load_tree(dest, spec, spec.source)


def _load_path(spec: DatasetSpec, env: DataEnv) -> ImageSet:
    path = Path(os.path.expanduser(spec.source))
    if path.is_dir():
        return _load_tree(path, spec, spec.source)
    if not path.exists():
        raise UserError(f"dataset source {spec.source!r}: no such file or folder")
    name = path.name.lower()
    if name.endswith(".npz"):
        return _load_npz(path, spec, spec.source)
    if name.endswith(archive.ARCHIVE_SUFFIXES):
        return _load_archive(path, spec, env)
    raise UserError(
        f"dataset source {spec.source!r}: not an image folder, a .zip/.tar/.tar.gz/.tgz or an .npz"
    )


def _load_stored(spec: DatasetSpec, env: DataEnv) -> ImageSet:
    dataset_id = spec.source.partition(":")[2]
    if env.datasets_dir is None:
        raise UserError(f"{spec.source}: uploaded datasets are not available here (no datasets folder)")
    folder = Path(env.datasets_dir) / dataset_id
    if not folder.is_dir():
        raise UserError(f"{spec.source}: no such dataset; upload one with POST /v1/datasets")
    data = dataset_layout(folder)
    if data.name == archive.DATASET_NPZ_FILE:
        return _load_npz(data, spec, spec.source)
    return _load_tree(data, spec, spec.source)
