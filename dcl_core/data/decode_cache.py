"""The decode cache: `DataEnv.cache_dir/decoded/<key>.npz` holds the decoded uint8 tensor of one
dataset at one size. The key is the sha256 of every file's name, size and mtime, plus the size
asked for, skip_corrupt and the decoder (cpu or cuda), so a changed file, size or decoder misses.
Written atomically (a temporary file, then a rename); read back with the zip's CRC-32 checked,
so a damaged file is ignored (and rewritten by that load). Safe to delete at any time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CACHE_VERSION = 1


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
