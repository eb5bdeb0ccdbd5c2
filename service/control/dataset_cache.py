"""A machine's copies of stored datasets, keyed by the sha256 of their packed form.

A dataset lives in the object store as one uncompressed tar (`pack`). A process that needs it
fetches the tar once, checks its sha256 against the job store's record, and unpacks it under
`ROOT/SHA256/`; the next job on this machine reads no network. Entries are touched on use and
the least recently used are removed when the cache grows past its size limit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SIZE_FILE = ".bytes"
"""In an entry: its size in bytes, written last (an entry without it is incomplete)."""


def pack(folder: Path, dest: Path) -> str:
    """Write `folder`'s files as an uncompressed tar at `dest`; returns its sha256. Sorted and with
    fixed owners and times, so the same files always pack to the same bytes."""
    digest = hashlib.sha256()

    class _Hashing:
        def __init__(self, raw):
            self.raw = raw

        def write(self, data):
            digest.update(data)
            return self.raw.write(data)

    def normal(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with open(dest, "wb") as raw, tarfile.open(fileobj=_Hashing(raw), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False, filter=normal)
    return digest.hexdigest()


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


class DatasetCache:
    def __init__(self, root: Path, limit_bytes: int):
        self.root = Path(root)
        self.limit_bytes = int(limit_bytes)
        self._lock = threading.Lock()

    def entry(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"{sha256!r} is not a sha256")
        return self.root / sha256

    def get(self, sha256: str) -> Path | None:
        """The unpacked folder of a complete entry (touched: just used), or None."""
        folder = self.entry(sha256)
        if not (folder / SIZE_FILE).is_file():
            return None
        os.utime(folder / SIZE_FILE)
        return folder

    def fill(self, sha256: str, fetch) -> Path:
        """The entry for `sha256`, made by `fetch(tar_path)` (which downloads and verifies the
        tar) when missing. Unpacked aside and renamed in: never half an entry under its name."""
        found = self.get(sha256)
        if found is not None:
            return found
        self.root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".fill-", dir=self.root))
        try:
            tar_path = work / "dataset.tar"
            fetch(tar_path)
            tree = work / "tree"
            with tarfile.open(tar_path) as tar:
                tar.extractall(tree, filter="data")
            tar_path.unlink()
            (tree / SIZE_FILE).write_text(str(_tree_bytes(tree)))
            self.adopt_tree(sha256, tree)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self.entry(sha256)

    def adopt_tree(self, sha256: str, tree: Path) -> Path:
        """Move an unpacked folder in as the entry of `sha256` (another process's copy wins)."""
        if not (tree / SIZE_FILE).is_file():
            (tree / SIZE_FILE).write_text(str(_tree_bytes(tree)))
        folder = self.entry(sha256)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if os.stat(tree).st_dev != os.stat(folder.parent).st_dev:  # another volume: copy aside first
            aside = Path(tempfile.mkdtemp(prefix=".adopt-", dir=self.root)) / "tree"
            shutil.copytree(tree, aside)
            shutil.rmtree(tree, ignore_errors=True)
            tree = aside
        try:
            os.rename(tree, folder)
        except OSError:
            if self.get(sha256) is None:
                raise
        finally:
            shutil.rmtree(tree.parent if tree.parent.name.startswith(".adopt-") else tree, ignore_errors=True)
        self.evict(keep=sha256)
        return folder

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used entries (never `keep`) until the cache fits its limit."""
        with self._lock:
            entries = []
            for folder in self.root.iterdir() if self.root.is_dir() else []:
                size_file = folder / SIZE_FILE
                if folder.name.startswith(".") or not size_file.is_file():
                    continue
                try:
                    entries.append((size_file.stat().st_mtime, folder.name, int(size_file.read_text() or 0)))
                except (OSError, ValueError):
                    continue
            total = sum(size for _, _, size in entries)
            removed = []
            for _, name, size in sorted(entries):
                if total <= self.limit_bytes:
                    break
                if name == keep:
                    continue
                (self.root / name / SIZE_FILE).unlink(missing_ok=True)  # incomplete first, then gone
                shutil.rmtree(self.root / name, ignore_errors=True)
                total -= size
                removed.append(name)
            if removed:
                log.info("dataset cache %s: evicted %d entries", self.root, len(removed))
            return removed
