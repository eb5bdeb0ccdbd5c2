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
  service writes it with `dcl_core.data.archive.store_dataset`).
- a local path: an image folder, a .zip/.tar/.tar.gz/.tgz of one (extracted with
  `safe_extract` into `DataEnv.cache_dir/extracted/<sha256 of the file>`, or into a temporary
  folder removed after loading when there is no cache dir), or an .npz (`x` uint8 (N,H,W,C)
  or (N,H,W), optional integer `y` and string `classes`).

Image trees follow `dcl_core.data.archive.list_images` (class subfolders give labels). Files are
decoded with Pillow (only `archive.IMAGE_FORMATS`) in a thread pool straight into one
preallocated array. With `image_size` set, images are centre-cropped to a square and resized
(Pillow bicubic for files; antialiased bilinear `F.interpolate` for tensor sources);
without it all images must share one square size. `max_images` keeps the first N images in
the source's order (for image trees: class by class, sorted paths).

Training opens its data with `open_images`: image files (a folder, an archive, a `dataset:ID`
image tree) stream from disk when `DatasetSpec.in_memory` is false, or when it is None and
their decoded size N*3*S*S is over `IN_MEMORY_MAX_BYTES`; every other source is in memory.
A stream yields the same pixels in the same `epoch_order` as the in-memory set, so both
train to the same weights.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from dcl_core.data import archive, decode
from dcl_core.data.archive import dataset_layout
from dcl_core.data.catalog import DIGITS_TRAIN, TORCHVISION_FOLDERS
from dcl_core.config import DatasetSpec
from dcl_core.errors import UserError
from dcl_core.files import sha256_file

__all__ = [
    "DataEnv", "ImageSet", "ImageStream", "load_images", "open_images", "should_stream", "epoch_order",
    "dataset_layout",
]


LOCAL_ARCHIVE_MAX_BYTES = 1 << 40
LOCAL_ARCHIVE_MAX_FILES = 50_000_000
"""Caps for the CLI's own archives (uploads to the service are capped by the service)."""

IN_MEMORY_MAX_BYTES = 4 << 30
"""Auto mode: image files whose decoded uint8 size is over this stream from disk."""



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
        A constant channel (a flat colour, a blank channel) gets std MIN_CHANNEL_STD, not 0.

        Accumulated in float64 chunk by chunk (no full-size float copy).
        """
        n = self.num_images
        if n == 0:
            raise UserError(f"{self.source}: no images to measure")
        index = _sample_index(n, max_images)
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


def _sample_index(n: int, max_images: int) -> torch.Tensor:
    """Up to max_images evenly spaced indices of n, first and last included. Shape: (min(n, max_images),)."""
    if n > max_images:
        return torch.linspace(0, n - 1, max_images, dtype=torch.float64).round().long()
    return torch.arange(n)


def epoch_order(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's image order: a function of (seed, epoch) alone, so a resumed run (and every
    DDP rank) draws the same order without carrying sampler state. Shape: (num_images,) int64."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_images, generator=gen)


class _ImageFiles(Dataset):
    """Decodes one image file per item, as `_load_files` does. Item: ((3, S, S) uint8, problem),
    the problem "" or why the file cannot be read (the caller raises: an exception raised in a
    DataLoader worker would reach the user wrapped in a traceback)."""

    def __init__(self, paths: list[Path], base: Path, size: int, skip_corrupt: bool):
        # Decoding at the native size with size set gives the same pixels as without (a JPEG
        # draft at scale 1): any file of another size is resized, never left blank.
        self.paths, self.base, self.size, self.skip_corrupt = paths, base, size, skip_corrupt

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        # skip_corrupt: the next readable file stands in for an unreadable one, so that batches
        # keep their size (a CUDA-graph step needs fixed shapes).
        out = np.zeros((3, self.size, self.size), dtype=np.uint8)
        problem = ""
        for k in range(len(self.paths) if self.skip_corrupt else 1):
            path = self.paths[(index + k) % len(self.paths)]
            try:
                _decode_into(path, out, self.size)
                return torch.from_numpy(out), ""
            except archive.CorruptImage as exc:
                problem = f"{_relative(path, self.base)} ({exc})"
        return torch.from_numpy(out), problem


@dataclass
class ImageStream:
    """Image files decoded batch by batch by DataLoader workers; labels (N,) int64 or None.

    Holds the file list only. With `spec.skip_corrupt`, a file found unreadable during training
    is replaced by the next readable one (the in-memory set drops it); without, it ends the run.
    A temporary extraction (`keep`) lives as long as the stream.
    """

    paths: list[Path]
    labels: torch.Tensor | None
    classes: list[str] | None
    source: str
    image_size: int
    root: Path
    spec: DatasetSpec
    keep: ExitStack

    @property
    def num_images(self) -> int:
        return len(self.paths)

    def channel_stats(self, max_images: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) in [0, 1] units, decoding the same evenly spaced files that
        `ImageSet.channel_stats` measures (so both modes normalise alike)."""
        sample = [self.paths[i] for i in _sample_index(self.num_images, max_images).tolist()]
        images = _load_files(sample, None, None, self.root, self.spec, self.source)
        return images.channel_stats(max_images=max_images)

    def batches(self, epoch: int, seed: int, batch_size: int, *, skip: int = 0, rank: int = 0, world: int = 1,
                num_workers: int = 0, pin_memory: bool = False) -> Iterator[torch.Tensor]:
        """The epoch's batches in `epoch_order`, from batch `skip` on (an exact resume), the last
        partial batch dropped; under DDP, rank's slice of each global batch.

        Shape: (batch_size // world, 3, S, S) uint8 on the CPU (pinned with pin_memory).
        """
        order = epoch_order(self.num_images, seed, epoch)
        local = batch_size // world
        starts = (i * batch_size + rank * local for i in range(skip, self.num_images // batch_size))
        index = [order[start:start + local].tolist() for start in starts]
        files = _ImageFiles(self.paths, self.root, self.image_size, self.spec.skip_corrupt)
        loader = DataLoader(files, batch_sampler=index, num_workers=num_workers, pin_memory=pin_memory)
        for images, problems in loader:
            bad = [p for p in problems if p]
            if bad and self.spec.skip_corrupt:
                raise UserError(f"{self.source}: none of the {self.num_images} image files can be read")
            if bad:
                raise archive.corrupt_error(bad, len(bad))
            yield images


def should_stream(in_memory: bool | None, num_images: int, image_size: int,
                  max_bytes: int = IN_MEMORY_MAX_BYTES) -> bool:
    """Whether training streams image files: as `in_memory` says, else (None) when their decoded
    uint8 size N*3*S*S bytes is over max_bytes."""
    if in_memory is not None:
        return not in_memory
    return num_images * 3 * image_size * image_size > max_bytes


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
            return _load_tree(path, spec, spec.source, env.cache_dir)
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
        paths, labels, classes = _list_tree(path, spec)
        side = spec.image_size or _first_side(paths)
        if not should_stream(spec.in_memory, len(paths), side):
            return _load_files(paths, labels, classes, path, spec, spec.source, env.cache_dir)
        stream = _open_stream(paths, labels, classes, path, spec, keep.pop_all())
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


def _relative(path: Path, base: Path) -> str:
    """A file's name in messages: relative to the dataset's folder."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _header_size(path: Path) -> tuple[int, int]:
    """An image file's stored (width, height), read from its header alone. Raises archive.CorruptImage."""
    try:
        with Image.open(path, formats=archive.IMAGE_FORMATS) as im:
            return im.size
    except Exception as exc:  # Pillow's plugins raise many types on malformed data
        raise archive.CorruptImage(str(exc) or type(exc).__name__) from None


def _first_side(paths: list[Path]) -> int:
    """The width of the first file with a readable header; 0 when there is none (loading it
    in memory then reports the unreadable files)."""
    for path in paths:
        try:
            return _header_size(path)[0]
        except archive.CorruptImage:
            continue
    return 0


def _list_tree(root: Path, spec: DatasetSpec) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """`archive.list_images`, cut to spec.max_images; an empty tree is a UserError."""
    paths, labels, classes = archive.list_images(root)
    if spec.max_images is not None:
        paths = paths[: spec.max_images]
        labels = labels[: spec.max_images] if labels is not None else None
    if not paths:
        raise UserError(
            f"{spec.source}: no images found (expected image files directly in the folder or in class subfolders)"
        )
    return paths, labels, classes


def _load_files(paths: list[Path], labels: list[int] | None, classes: list[str] | None,
                base: Path, spec: DatasetSpec, source: str, cache_dir: Path | None = None) -> ImageSet:
    """Decode the files into one ImageSet (see `dcl_core.data.decode`); with `cache_dir`, the decoded
    tensor is read from, or written to, the decode cache there."""
    device = "cuda" if decode.gpu_decode_available() else "cpu"
    cached = None
    if cache_dir is not None:
        cached_file = decode.cache_path(cache_dir, decode.cache_key(paths, base, spec.image_size,
                                                                    spec.skip_corrupt, device))
        cached = decode.load_cached(cached_file, len(paths))
    if cached is not None:
        out, kept = cached
    else:
        out, kept = _decode_files(paths, base, spec, source, device)
        if cache_dir is not None:
            decode.save_cached(cached_file, out, kept)
    y = np.asarray(labels, dtype=np.int64)[kept] if labels is not None else None
    return ImageSet(images=torch.from_numpy(out), labels=torch.from_numpy(y) if y is not None else None,
                    classes=classes, source=source)


def _decode_files(paths: list[Path], base: Path, spec: DatasetSpec, source: str,
                  device: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (M, 3, S, S) uint8, kept (N,) bool: which files are in it)."""
    def rel(p: Path) -> str:
        return _relative(p, base)

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

    results = decode.decode_files(paths, out, size, work, device=device)
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
    keep = np.array([i not in corrupt for i in range(n)], dtype=bool)
    if corrupt:
        if not keep.any():
            raise UserError(f"{source}: none of the {n} image files can be read")
        out = out[keep]
    return out, keep


def _load_tree(root: Path, spec: DatasetSpec, source: str, cache_dir: Path | None = None) -> ImageSet:
    paths, labels, classes = _list_tree(root, spec)
    return _load_files(paths, labels, classes, root, spec, source, cache_dir)


def _open_stream(paths: list[Path], labels: list[int] | None, classes: list[str] | None,
                 root: Path, spec: DatasetSpec, keep: ExitStack) -> ImageStream:
    """An ImageStream over the files. Without spec.image_size every header is read first (not
    the pixels): a stream needs one square size, and a mixed folder should fail now, not hours in."""
    side = spec.image_size
    if side is None:
        def probe(i: int) -> tuple[int, int] | str:
            try:
                return _header_size(paths[i])
            except archive.CorruptImage as exc:
                return f"{_relative(paths[i], root)} ({exc})"

        results = archive.parallel_map(probe, len(paths))
        corrupt = [r for r in results if isinstance(r, str)]
        if corrupt and not spec.skip_corrupt:
            raise archive.corrupt_error(corrupt, len(corrupt))
        good = [i for i, r in enumerate(results) if not isinstance(r, str)]
        if not good:
            raise UserError(f"{spec.source}: none of the {len(paths)} image files can be read")
        first = _relative(paths[good[0]], root)
        w, h = results[good[0]]
        if w != h:
            raise UserError(f"{spec.source}: images are {w}x{h} ({first}), not square; set image_size")
        other = [i for i in good if results[i] != (w, h)]
        if other:
            i = other[0]
            raise UserError(
                f"{spec.source}: images have different sizes ({first} is {w}x{h}, "
                f"{_relative(paths[i], root)} is {results[i][0]}x{results[i][1]}, {len(other)} differ); "
                "streaming needs one size: set image_size"
            )
        paths = [paths[i] for i in good]
        labels = [labels[i] for i in good] if labels is not None else None
        side = w
    y = torch.tensor(labels, dtype=torch.int64) if labels is not None else None
    return ImageStream(paths=paths, labels=y, classes=classes, source=spec.source, image_size=side,
                       root=root, spec=spec, keep=keep)


def _extract(path: Path, env: DataEnv, stack: ExitStack) -> Path:
    """Extracts an archive into the cache (kept), or into a temporary folder removed when stack closes."""
    limits = dict(max_total_bytes=LOCAL_ARCHIVE_MAX_BYTES, max_files=LOCAL_ARCHIVE_MAX_FILES)
    if env.cache_dir is not None:
        dest = Path(env.cache_dir) / "extracted" / sha256_file(path)[:32]
        if not dest.is_dir():
            try:
                archive.safe_extract(path, dest, **limits)
            except OSError:
                # Another process may have extracted the same archive meanwhile: use its copy.
                if not dest.is_dir():
                    raise
        return dest
    dest = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dcl-extract-"))) / "tree"
    archive.safe_extract(path, dest, **limits)
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
    if name.endswith(archive.ARCHIVE_SUFFIXES):
        return _extract(path, env, stack)
    raise UserError(
        f"dataset source {spec.source!r}: not an image folder, a .zip/.tar/.tar.gz/.tgz or an .npz"
    )
