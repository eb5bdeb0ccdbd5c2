"""Fast image decoding for in-memory datasets, and a cache of what it decoded.

Decoding: JPEGs go to torchvision's libjpeg-turbo decoder in batches (`decode_jpeg` on a list,
in a thread pool), on the GPU with nvJPEG when CUDA is there. Pillow's per-file path
(`data._decode_into`) remains for everything else: other formats, EXIF-tagged or Adobe (maybe
CMYK) JPEGs, unreadable files (for its error messages), and, on the CPU, JPEGs that need a
resize (Pillow's draft mode decodes a large JPEG at a reduced scale, far cheaper than a full
decode). So on the CPU the pixels are Pillow's exactly; on the GPU a JPEG that needs a resize
is centre-cropped and resized there (bicubic, antialiased): close to Pillow's, not bit-equal.

Cache: `DataEnv.cache_dir/decoded/<key>.npz` holds the decoded uint8 tensor of one dataset at
one size. The key is the sha256 of every file's name, size and mtime, plus the size asked for,
skip_corrupt and the decoder (cpu or cuda), so a changed file, size or decoder misses. Written
atomically (a temporary file, then a rename); read back with the zip's CRC-32 checked, so a
damaged file is ignored (and rewritten by that load). Safe to delete at any time.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CHUNK = 256  # files per decode_jpeg call


# --------------------------------------------------------------------------- JPEG headers


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


# --------------------------------------------------------------------------- decoding


def gpu_decode_available() -> bool:
    return torch.cuda.is_available()


def decode_files(paths: list[Path], out: np.ndarray, size: int | None,
                 fallback: Callable[[int], tuple[int, int] | str], *, device: str = "cpu",
                 workers: int | None = None) -> list[tuple[int, int] | str]:
    """Decode every file into `out[i]` (N, 3, S, S) uint8; per file, what `fallback(i)` (the
    per-file path) would return: the decoded (width, height), or why it cannot be read.

    `size` None: the images must already be S x S (others go to the fallback, which reports them).
    """
    from dcl_core.data.archive import decode_workers

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
    h, w = image.shape[-2:]
    if h == w == side:
        return image
    crop = min(h, w)
    top, left = (h - crop) // 2, (w - crop) // 2
    x = image[:, top:top + crop, left:left + crop].unsqueeze(0).float()
    y = F.interpolate(x, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)[0]


# --------------------------------------------------------------------------- cache


def cache_key(paths: list[Path], base: Path, size: int | None, skip_corrupt: bool, decoder: str) -> str:
    """sha256 of the files' names, sizes and mtimes and of what shapes the decoded tensor."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} size={size} skip={skip_corrupt} decoder={decoder}\n".encode())
    prefix = os.path.join(str(base), "")
    lines = []
    for path in paths:  # string operations: pathlib would cost more than the stat calls
        name = str(path)
        stat = os.stat(name)
        lines.append(f"{name.removeprefix(prefix)}\0{stat.st_size}\0{stat.st_mtime_ns}\n")
    digest.update("".join(lines).encode())
    return digest.hexdigest()


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "decoded" / f"{key}.npz"


def load_cached(path: Path, count: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(images (M, 3, S, S) uint8, kept (count,) bool) from a cache file; None when it is missing,
    damaged (CRC, truncation) or does not fit `count` files."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, kept = npz["images"], npz["kept"]
        if (images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3 or kept.dtype != bool
                or kept.shape != (count,) or int(kept.sum()) != images.shape[0]):
            raise ValueError(f"shapes {images.shape} / {kept.shape} do not fit {count} files")
        return images, kept
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring the damaged decode cache %s (%s); decoding again", path, exc)
        return None


def save_cached(path: Path, images: np.ndarray, kept: np.ndarray) -> None:
    """Write atomically; a failure (disk full...) only costs the next job a decode."""
    from dcl_core.files import atomic_open

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            np.savez(f, images=images, kept=kept)
    except OSError as exc:
        log.warning("could not write the decode cache %s (%s)", path, exc)
