"""Image decoding, all of it: Pillow for any file (`decode_image`, `decode_into`; Pillow's
decoders for IMAGE_FORMATS only), and JPEGs in batches with torchvision (`decode_files`) where
that gives the same pixels; `decode_images` decodes a file list into one uint8 array.

Batches: JPEGs go to torchvision's libjpeg-turbo decoder (`decode_jpeg` on a list, in a thread
pool), on the GPU with nvJPEG when CUDA is there. Pillow's per-file path (`decode_into`) remains
for everything else: other formats, EXIF-tagged or Adobe (maybe CMYK) JPEGs, unreadable files
(for its error messages), and, on the CPU, JPEGs that need a resize (Pillow's draft mode decodes
a large JPEG at a reduced scale, far cheaper than a full decode). So on the CPU the pixels are
Pillow's exactly; on the GPU a JPEG that needs a resize is centre-cropped and resized there
(bicubic, antialiased): close to Pillow's, not bit-equal.

Imports no torch at module level (the API decodes uploads with it); the batch decoder imports
torch and torchvision when it runs.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, TypeVar

import numpy as np
from PIL import Image, ImageOps

from dcl_core.data.tree import relative_name
from dcl_core.errors import UserError

if TYPE_CHECKING:
    import torch

IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
"""Pillow format ids that images are decoded with (never any other of Pillow's plugins)."""

MAX_LISTED = 10
"""How many file names an error message lists."""

CHUNK = 256  # files per decode_jpeg call


# --------------------------------------------------------------------------- Pillow


class CorruptImage(Exception):
    """An image file that cannot be decoded (its message says why)."""


def decode_image(
    path: str | os.PathLike[str], *, draft_size: tuple[int, int] | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Opens and fully decodes an image file with Pillow's decoders for IMAGE_FORMATS only.

    Returns the image and its stored (width, height). Pillow's decompression-bomb limit
    (`Image.MAX_IMAGE_PIXELS`) applies: an image over it is corrupt. `draft_size` lets a JPEG
    decode at a reduced scale (still at least that size). Raises CorruptImage for anything
    unreadable.
    """
    try:
        with open(path, "rb") as f:
            im = Image.open(f, formats=IMAGE_FORMATS)
            size = im.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and size[0] * size[1] > limit:
                raise CorruptImage(f"{size[0]}x{size[1]} pixels is over the decompression-bomb limit")
            if draft_size is not None and im.format == "JPEG":
                im.draft("RGB", draft_size)
            im.load()
            return im, size
    except CorruptImage:
        raise
    except Image.DecompressionBombError:
        raise CorruptImage("over the decompression-bomb limit") from None
    except Image.UnidentifiedImageError:
        raise CorruptImage("not an image in a supported format") from None
    except MemoryError:
        raise CorruptImage("too large to decode") from None
    except Exception as exc:  # Pillow's plugins raise many types on malformed data
        raise CorruptImage(str(exc) or type(exc).__name__) from None


def header_size(path: Path) -> tuple[int, int]:
    """An image file's stored (width, height), read from its header alone. Raises CorruptImage."""
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as im:
            return im.size
    except Exception as exc:  # Pillow's plugins raise many types on malformed data
        raise CorruptImage(str(exc) or type(exc).__name__) from None


def decode_into(path: Path, out: np.ndarray, size: int | None) -> tuple[int, int]:
    """Decodes one file into out (3, S, S) uint8; returns the decoded (width, height).

    Without size, the image must match out's size exactly (else its size is returned unchanged
    and nothing is written). Raises CorruptImage.
    """
    draft = (size, size) if size is not None else None
    im, _ = decode_image(path, draft_size=draft)
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


def corrupt_error(names: Iterable[str], total: int) -> UserError:
    """The error for unreadable files without skip_corrupt: names up to MAX_LISTED of them."""
    names = list(names)[:MAX_LISTED]
    more = f" and {total - len(names)} more" if total > len(names) else ""
    return UserError(
        f"{total} file(s) cannot be read as images: {'; '.join(names)}{more}. "
        "Remove them, or set skip_corrupt: true to skip them"
    )


def decode_workers() -> int:
    """Threads for decoding: Pillow releases the GIL while decoding and reading."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(2, min(32, 2 * cores))


T = TypeVar("T")


def parallel_map(fn: Callable[[int], T], count: int, *, chunk: int = 256) -> list[T]:
    """[fn(i) for i in range(count)], run in a thread pool over chunks of indices."""
    if count <= chunk:
        return [fn(i) for i in range(count)]

    def run(start: int) -> list[T]:
        return [fn(i) for i in range(start, min(start + chunk, count))]

    with concurrent.futures.ThreadPoolExecutor(decode_workers()) as pool:
        return [r for part in pool.map(run, range(0, count, chunk)) for r in part]


# --------------------------------------------------------------------------- batches of JPEGs


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG that the batch decoder gives Pillow's pixels for: baseline or
    progressive, Huffman-coded, 1 or 3 components, no EXIF (its orientation is Pillow's to
    apply) and no Adobe segment (maybe CMYK). None for anything else."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            if i + 10 > n:
                return None
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return (width, height) if data[i + 9] in (1, 3) and width and height else None
        if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xCC):  # lossless, arithmetic...
            return None
        if marker == 0xE1 and data[i + 4:i + 10] == b"Exif\x00\x00":
            return None
        if marker in (0xEE, 0xDA, 0xD9):  # Adobe; a scan or the end before any frame header
            return None
        i += 2 + length
    return None


def gpu_decode_available() -> bool:
    import torch

    return torch.cuda.is_available()


def decode_files(paths: list[Path], out: np.ndarray, size: int | None,
                 fallback: Callable[[int], tuple[int, int] | str], *, device: str = "cpu",
                 workers: int | None = None) -> list[tuple[int, int] | str]:
    """Decode every file into `out[i]` (N, 3, S, S) uint8; per file, what `fallback(i)` (the
    per-file path) would return: the decoded (width, height), or why it cannot be read.

    `size` None: the images must already be S x S (others go to the fallback, which reports them).
    """
    import torch

    n = len(paths)
    side = out.shape[-1]
    results: list[tuple[int, int] | str | None] = [None] * n
    on_gpu = device == "cuda"

    def run(start: int) -> None:
        batch, datas = [], []
        for i in range(start, min(start + CHUNK, n)):
            try:
                with open(paths[i], "rb") as f:
                    data = f.read()
            except OSError:
                data = b""
            dims = jpeg_size(data)
            usable = dims is not None and dims[0] * dims[1] <= (Image.MAX_IMAGE_PIXELS or 1 << 62) and (
                dims == (side, side) or (on_gpu and size is not None))
            if usable:
                batch.append((i, dims))
                datas.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            else:
                results[i] = fallback(i)
        if batch:
            try:
                _decode_batch(datas, [i for i, _ in batch], out, side, device)
                for i, dims in batch:
                    results[i] = dims
            except RuntimeError:  # a damaged file among them: Pillow, file by file, says which
                for i, _ in batch:
                    results[i] = fallback(i)

    starts = range(0, n, CHUNK)
    threads = 1 if on_gpu else (workers or decode_workers())
    if threads == 1 or n <= CHUNK:
        for start in starts:
            run(start)
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, starts))
    return results  # type: ignore[return-value]


def _decode_batch(datas: list[torch.Tensor], index: list[int], out: np.ndarray, side: int, device: str) -> None:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
    if device == "cpu":
        for i, image in zip(index, images):
            out[i] = image.numpy()
        return
    resized = torch.stack([_fit_square(image, side) for image in images])
    out[index] = resized.cpu().numpy()


def _fit_square(image: torch.Tensor, side: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, side, side): centre square crop, antialiased bicubic resize."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    if h == w == side:
        return image
    crop = min(h, w)
    top, left = (h - crop) // 2, (w - crop) // 2
    x = image[:, top:top + crop, left:left + crop].unsqueeze(0).float()
    y = F.interpolate(x, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)[0]


# --------------------------------------------------------------------------- a file list


def decode_images(paths: list[Path], base: Path, size: int | None, skip_corrupt: bool, source: str,
                  device: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode image files (named relative to `base` in messages) into (images (M, 3, S, S) uint8,
    kept (N,) bool: which files are in it), at `size` or at the files' one native square size.
    Unreadable files are a UserError naming them, unless `skip_corrupt` (then left out)."""
    def rel(p: Path) -> str:
        return relative_name(p, base)

    n = len(paths)
    corrupt: dict[int, str] = {}
    if size is None:
        # The native size: the first readable image's; every other must match it.
        for i, p in enumerate(paths):
            try:
                im, native = decode_image(p)
                im.close()
                break
            except CorruptImage as exc:
                corrupt[i] = f"{rel(p)} ({exc})"
        else:
            if not skip_corrupt:
                raise corrupt_error(corrupt.values(), len(corrupt))
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
            return decode_into(paths[i], out[i], size)
        except CorruptImage as exc:
            return f"{rel(paths[i])} ({exc})"

    results = decode_files(paths, out, size, work, device=device)
    corrupt = {i: r for i, r in enumerate(results) if isinstance(r, str)}
    if corrupt and not skip_corrupt:
        raise corrupt_error(corrupt.values(), len(corrupt))
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
