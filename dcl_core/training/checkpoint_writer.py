"""Checkpoints off the training thread: the state is copied to host memory (pinned on CUDA, the
buffers reused), then written, hashed and fsynced by a background thread.

At most one write is in flight: a new checkpoint waits for the previous one (never skips it), so
every checkpoint the loop asks for (a stop, a cancel, the run time up, an epoch end) lands, and
the host copy of at most one state is held. Writes are rare (epoch ends, `checkpoint_every_steps`,
`checkpoint_every_s`), so the wait is normally nil.

A write's rename waits for its `Gate`: the loop opens it once the metric rows up to the
checkpoint's step are delivered, and shuts it when they never will be (a lost lease), so a
resume never starts past the last reported step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dcl_core.training.checkpoint import save_checkpoint

log = logging.getLogger(__name__)


class Discarded(Exception):
    """The gate of a checkpoint was shut: its file is not renamed into place."""


class Gate:
    """Opened (commit) or shut (discard) once; the writer thread waits on it before the rename."""

    def __init__(self):
        self._event = threading.Event()
        self.commit = False

    def open(self) -> None:
        self.commit = True
        self._event.set()

    def shut(self) -> None:
        self._event.set()

    def wait(self) -> None:
        self._event.wait()
        if not self.commit:
            raise Discarded


class CheckpointWriter:
    """`save(state, gate)` returns once the state is copied; `wait()` until the write is done.

    `on_written(path, sha256)` is called from the writer thread after each rename. A write's
    error is raised in the training thread at the next `save` or `wait`."""

    def __init__(self, path: Path, on_written: Callable[[Path, str], None], pin: bool):
        self.path, self.on_written, self.pin = path, on_written, pin
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._buffers: dict[tuple, torch.Tensor] = {}

    def save(self, state: dict[str, Any], gate: Gate) -> None:
        self.wait()
        host = self._copy(state, ())
        if self.pin:
            torch.cuda.synchronize()  # the non-blocking copies into pinned memory are done
        self._thread = threading.Thread(target=self._write, args=(host, gate), name="checkpoint-writer", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Block until the write in flight (if any) is renamed or discarded; raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Finish the write in flight; on an unwinding run its error is logged, not raised."""
        try:
            self.wait()
        except Exception:
            log.warning("the last checkpoint write of %s failed", self.path, exc_info=True)

    def _write(self, state: dict[str, Any], gate: Gate) -> None:
        try:
            sha = save_checkpoint(self.path, state, before_rename=gate.wait)
        except Discarded:
            return
        except BaseException as exc:  # raised in the training thread
            self._error = exc
            return
        try:
            self.on_written(self.path, sha)
        except BaseException as exc:
            self._error = exc

    def _copy(self, value: Any, key: tuple) -> Any:
        """A host copy of the state: the training step goes on changing the live tensors."""
        if isinstance(value, torch.Tensor):
            value = value.detach()
            buffer = self._buffers.get(key)
            if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
                buffer = torch.empty(value.shape, dtype=value.dtype, pin_memory=self.pin and value.is_cuda)
                self._buffers[key] = buffer
            buffer.copy_(value, non_blocking=self.pin and value.is_cuda)
            return buffer
        if isinstance(value, dict):
            return {k: self._copy(v, key + (k,)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._copy(v, key + (i,)) for i, v in enumerate(value))
        return value
