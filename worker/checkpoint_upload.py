"""Checkpoints uploaded to the object store as the engine makes them, without stalling training.

`submit` (called from the engine's `on_checkpoint`) only hard-links the new checkpoint and copies
the metrics log beside it (the engine replaces `last.pt` by a rename, so the link keeps these
bytes); a background thread uploads. One slot: a checkpoint made while another is uploading
replaces any waiting one, so the newest complete checkpoint is the one that ends up in the store.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SNAPSHOTS = ".uploading"
"""Under the run's checkpoints/ folder: the snapshots waiting for or being uploaded."""


class CheckpointUploader:
    def __init__(self, storage, job_id: str, run_dir: Path, metrics_name: str = "metrics.jsonl"):
        self.storage, self.job_id, self.run_dir, self.metrics_name = storage, job_id, Path(run_dir), metrics_name
        self.uploaded = 0
        self._numbers = itertools.count()
        self._pending: tuple[Path, Path | None, str | None] | None = None
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"checkpoint-upload-{job_id}")
        self._thread.start()

    def submit(self, checkpoint: Path, sha256: str | None = None) -> None:
        """Queue `checkpoint` (its sha256 when the engine knows it: not hashed again)."""
        folder = Path(checkpoint).parent / SNAPSHOTS
        folder.mkdir(exist_ok=True)
        n = next(self._numbers)
        snapshot = folder / f"{n}.pt"
        try:
            os.link(checkpoint, snapshot)
        except OSError:  # no hard links on this file system
            shutil.copyfile(checkpoint, snapshot)
        metrics = self.run_dir / self.metrics_name
        metrics_copy = folder / f"{n}.jsonl" if metrics.is_file() else None
        if metrics_copy is not None:
            shutil.copyfile(metrics, metrics_copy)
        with self._cond:
            replaced, self._pending = self._pending, (snapshot, metrics_copy, sha256)
            self._cond.notify()
        if replaced is not None:
            _remove(replaced)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._pending is None:
                    return
                item, self._pending = self._pending, None
            try:
                self.storage.upload_checkpoint(self.job_id, *item)
                self.uploaded += 1
            except Exception:  # the next checkpoint tries again; a resume uses the newest that made it
                log.warning("job %s: could not upload a checkpoint", self.job_id, exc_info=True)
            finally:
                _remove(item)

    def close(self, finish: bool = False) -> None:
        """Stop: with `finish`, upload what is waiting first; else drop it. Waits for the upload in flight."""
        with self._cond:
            if not finish and self._pending is not None:
                _remove(self._pending)
                self._pending = None
            self._closing = True
            self._cond.notify()
        self._thread.join()


def _remove(item: tuple[Path, Path | None, str | None]) -> None:
    for path in item[:2]:
        if path is not None:
            Path(path).unlink(missing_ok=True)
