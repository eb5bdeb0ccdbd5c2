"""Resumable training state, written atomically and read back without unpickling objects."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dcl_core.errors import UserError
from dcl_core.files import atomic_open


class _HashingFile:
    """A binary file that hashes what goes through it: the checkpoint's sha256 without reading
    ~100 MB back. torch.save writes its zip strictly in order (no seek), so this is the file's hash."""

    def __init__(self, handle):
        self.handle, self.digest = handle, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def save_checkpoint(path: Path, state: dict[str, Any], before_rename: Callable[[], None] | None = None) -> str:
    """Write `state` (tensors, numbers, strings, dicts, lists) atomically; returns its sha256.

    `before_rename` runs once the bytes are written and flushed, before the file replaces `path`;
    an exception from it leaves `path` as it was (no temp file either)."""
    with atomic_open(path) as f:
        hashing = _HashingFile(f)
        try:
            torch.save(state, hashing)
        except RuntimeError as exc:
            # torch's writer turns a failed write (a full disk) into "unexpected pos": raise the
            # OSError underneath, which says what happened (ENOSPC) and which file it was.
            os_error = _os_error_in(exc)
            if os_error is None:
                raise
            raise OSError(os_error.errno, os_error.strerror, str(path)) from exc
        if before_rename is not None:
            before_rename()
    return hashing.digest.hexdigest()


def _os_error_in(exc: BaseException) -> OSError | None:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint this engine wrote. weights_only=True: no arbitrary objects are unpickled."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say which and what to do
        raise UserError(f"checkpoint {path} is unreadable ({exc}); delete it to start the run afresh") from exc
