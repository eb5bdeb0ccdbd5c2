"""Untrusted .npz files, checked member by member before any array is loaded.

An .npz is a zip of .npy files, and every number in it is a claim: the zip directory's
sizes, each .npy header's shape and dtype. `check_npz` believes none of them: it reads every
member through once (in chunks, never whole), counting the bytes that are really there
against the caps (unpacked bytes, compression ratio) and against what the .npy header
promises. Only then are the small arrays loaded: `y` (one label per image) and `classes`
(strings). `x` is never loaded here. An array of dtype object (pickled Python objects) is
refused, never unpickled.

Standard library, numpy and Pillow (for its decompression-bomb pixel limit) only.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from dcl_core.errors import UserError

MAX_CLASSES = 100_000
"""Most classes a dataset may have (labels 0..MAX_CLASSES-1)."""

MAX_CLASS_NAME_CHARS = 255
MAX_MEMBERS = 64
"""An .npz holds a few arrays; more members than this is not a dataset."""

RATIO_CHECK_MIN_BYTES = 1 << 20
"""Archive and .npz members smaller than this are exempt from the compression-ratio cap (a
flat 200 KB BMP deflates 1000:1 and harms nobody); the total-size cap bounds them."""

_CHUNK = 1 << 20


@dataclass
class NpzContents:
    """What a checked .npz holds. `shape`: x's (N,H,W[,C]); `labels`: y as int64, or None;
    `classes`: the class names (from `classes`, else "0".."K-1"), None without y;
    `unpacked_bytes`: the members' real total size."""

    shape: tuple[int, ...]
    labels: np.ndarray | None
    classes: list[str] | None
    unpacked_bytes: int


def _read_header(f: IO[bytes], key: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version} is not supported")
    except (zipfile.BadZipFile, zlib.error):
        raise  # the zip itself is damaged (a CRC, a deflate stream): said by check_npz
    except Exception as exc:
        raise UserError(f"{name}: array `{key}` has no valid .npy header ({exc}); save it with np.savez") from None
    return tuple(int(d) for d in shape), dtype


class _Reader:
    """Reads members through, counting real bytes against the caps."""

    def __init__(self, zf: zipfile.ZipFile, name: str, max_total_bytes: int | None, max_ratio: float | None):
        self.zf = zf
        self.name = name
        self.max_total_bytes = max_total_bytes
        self.max_ratio = max_ratio
        self.total = 0

    def too_large(self) -> UserError:
        return UserError(f"{self.name} unpacks to more than {self.max_total_bytes} bytes, the limit; "
                         "upload a smaller dataset")

    def header(self, info: zipfile.ZipInfo, key: str) -> tuple[tuple[int, ...], np.dtype]:
        with self.zf.open(info) as f:
            return _read_header(f, key, self.name)

    def read_through(self, info: zipfile.ZipInfo) -> None:
        """Reads the member to its end (zipfile checks its CRC there); for an .npy, checks that
        the data after the header is exactly as long as its shape and dtype say."""
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        is_npy = info.filename.endswith(".npy")
        with self.zf.open(info) as f:
            header_bytes = 0
            if is_npy:
                shape, dtype = _read_header(f, key, self.name)
                if dtype.hasobject:
                    raise UserError(
                        f"{self.name}: array `{key}` has dtype object (pickled Python objects), which is "
                        f"never loaded; save `{key}` as a numeric or string array (e.g. np.array(names, dtype=str))"
                    )
                header_bytes = f.tell()
            size = header_bytes
            self.total += header_bytes
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                self.total += len(chunk)
                if self.max_total_bytes is not None and self.total > self.max_total_bytes:
                    raise self.too_large()
                if size > info.file_size:
                    raise UserError(f"{self.name}: member {info.filename!r} holds more bytes than its header says")
                if self.max_ratio is not None and size >= RATIO_CHECK_MIN_BYTES:
                    ratio = size / max(info.compress_size, 1)
                    if ratio > self.max_ratio:
                        raise UserError(
                            f"{self.name}: member {info.filename!r} has a compression ratio of {ratio:.0f}:1, "
                            f"over the limit of {self.max_ratio:.0f}:1 (a zip bomb?); refusing it"
                        )
        if is_npy:
            expected = math.prod(shape) * dtype.itemsize
            if size - header_bytes != expected:
                raise UserError(
                    f"{self.name}: array `{key}` says shape {shape} of {dtype} ({expected} bytes) but holds "
                    f"{size - header_bytes} bytes; the file is truncated or damaged: save it again with np.savez"
                )

    def load(self, info: zipfile.ZipInfo) -> np.ndarray:
        with self.zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)


def _open_zip(path: Path, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except Exception as exc:  # zipfile raises many types on a malformed directory (NotImplementedError...)
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise UserError(
                f"{name} is a single .npy array; save an .npz with np.savez(path, x=images, y=labels)"
            ) from None
        raise UserError(f"{name} is not a readable .npz file (a zip of .npy arrays): {exc}") from None


def _check_x(shape: tuple[int, ...], dtype: np.dtype, name: str, max_images: int | None) -> None:
    if dtype != np.uint8:
        raise UserError(f"{name}: `x` must be uint8 (N,H,W,C) or (N,H,W), got dtype {dtype}")
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))):
        raise UserError(f"{name}: `x` must have shape (N,H,W,C) with C 1 or 3, or (N,H,W); got {shape}")
    n, h, w = shape[:3]
    if n < 1 or h < 1 or w < 1:
        raise UserError(f"{name}: `x` holds no images (shape {shape})")
    if max_images is not None and n > max_images:
        raise UserError(f"{name}: `x` holds {n} images, more than the limit of {max_images}; "
                        "split the dataset or upload fewer images")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and h * w > limit:
        raise UserError(f"{name}: `x` images are {w}x{h} pixels, over the decompression-bomb limit of "
                        f"{limit} pixels; resize them")


def _check_labels(y: np.ndarray, n: int, name: str) -> np.ndarray:
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise UserError(f"{name}: `y` labels must be >= 0, found {low}")
    num_classes = high + 1
    if num_classes > min(n, MAX_CLASSES):
        raise UserError(
            f"{name}: `y` has a label {high}, so {num_classes} classes, but the number of classes may be "
            f"at most the number of images ({n}) and at most {MAX_CLASSES}; number the classes 0..K-1 "
            "(e.g. y = np.unique(y, return_inverse=True)[1])"
        )
    return y.astype(np.int64)


def check_npz(
    path: str | os.PathLike[str],
    *,
    max_total_bytes: int | None = None,
    max_images: int | None = None,
    max_ratio: float | None = None,
    display_name: str | None = None,
) -> NpzContents:
    """Checks an .npz dataset: `x` uint8 (N,H,W,C) with C in (1,3), or (N,H,W); optional `y`
    integer (N,) labels in 0..min(N, MAX_CLASSES)-1; optional `classes`, a 1-D string array with
    a name for every label. Caps (None: none): `max_total_bytes` unpacked, `max_images` (N),
    `max_ratio` per member of at least RATIO_CHECK_MIN_BYTES. Raises UserError naming the array
    and the file (as `display_name`, default its name).
    """
    path = Path(path)
    name = display_name or path.name
    with _open_zip(path, name) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise UserError(f"{name} has {len(infos)} members; an .npz dataset holds x, y and classes")
        if max_total_bytes is not None and sum(i.file_size for i in infos) > max_total_bytes:
            raise UserError(f"{name} unpacks to more than {max_total_bytes} bytes, the limit; "
                            "upload a smaller dataset")
        members = {i.filename[:-4]: i for i in infos if i.filename.endswith(".npy")}
        if "x" not in members:
            raise UserError(f"{name} has no array `x`; expected x: uint8 (N,H,W,C) images, found {sorted(members)}")
        reader = _Reader(zf, name, max_total_bytes, max_ratio)
        try:
            # Cheap header checks first, then every byte of every member.
            shape, dtype = reader.header(members["x"], "x")
            _check_x(shape, dtype, name, max_images)
            n = shape[0]
            for key in ("y", "classes"):
                if key in members:
                    key_shape, key_dtype = reader.header(members[key], key)
                    _check_small(key, key_shape, key_dtype, n, name)
            for info in infos:
                reader.read_through(info)
            labels = classes = None
            if "y" in members:
                labels = _check_labels(reader.load(members["y"]), n, name)
                num_classes = int(labels.max()) + 1
                classes = [str(i) for i in range(num_classes)]
                if "classes" in members:
                    names = reader.load(members["classes"])
                    if len(names) < num_classes:
                        raise UserError(f"{name}: `classes` has {len(names)} names but `y` has labels up to "
                                        f"{num_classes - 1}; give one name per class")
                    classes = [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)
                               for s in names.tolist()]
        except UserError:
            raise
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as exc:
            # zlib and CRC errors, truncated members, unsupported compression
            raise UserError(f"{name} is damaged and cannot be read: {exc}") from None
    return NpzContents(shape=shape, labels=labels, classes=classes, unpacked_bytes=reader.total)


def _check_small(key: str, shape: tuple[int, ...], dtype: np.dtype, n: int, name: str) -> None:
    """Header checks of `y` and `classes`, before any of their bytes are read."""
    if dtype.hasobject:
        raise UserError(
            f"{name}: array `{key}` has dtype object (pickled Python objects), which is never loaded; "
            f"save `{key}` as a numeric or string array (e.g. np.array(names, dtype=str))"
        )
    if key == "y":
        if dtype.kind not in "iu" or shape != (n,):
            raise UserError(f"{name}: `y` must be integer labels of shape ({n},), got {dtype} {shape}")
        return
    chars = dtype.itemsize // 4 if dtype.kind == "U" else dtype.itemsize
    if len(shape) != 1 or dtype.kind not in "US":
        raise UserError(f"{name}: `classes` must be a 1-D array of strings, got {dtype} {shape}")
    if shape[0] > MAX_CLASSES:
        raise UserError(f"{name}: `classes` has {shape[0]} names, more than the limit of {MAX_CLASSES}")
    if chars > MAX_CLASS_NAME_CHARS:
        raise UserError(f"{name}: `classes` holds names of up to {chars} characters; "
                        f"keep class names to {MAX_CLASS_NAME_CHARS}")
