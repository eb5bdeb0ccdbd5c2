"""Resumable training state, written atomically and read back without unpickling objects."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from dcl_core.errors import UserError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, write) -> None:
    """Call `write(file)` on a temp file beside `path`, fsync, then rename over `path`.

    A reader sees the old file or the new one, never a truncated one (also after a crash).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> str:
    """Write `state` (tensors, numbers, strings, dicts, lists) atomically; returns its sha256."""
    atomic_write(path, lambda f: torch.save(state, f))
    return sha256_file(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint this engine wrote. weights_only=True: no arbitrary objects are unpickled."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say which and what to do
        raise UserError(f"checkpoint {path} is unreadable ({exc}); delete it to start the run afresh") from exc
