"""Untrusted archives: `safe_extract` unpacks a .zip, .tar or .tar.gz/.tgz of unknown origin into
a folder, refusing what could escape the folder or exhaust the disk. No torch (the API uses it)."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from dcl_core.data.npz import RATIO_CHECK_MIN_BYTES
from dcl_core.errors import UserError
from dcl_core.files import is_disk_error

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")

_COPY_CHUNK = 1 << 20


def _member_parts(name: str) -> tuple[str, ...]:
    """The normalised parts of an archive member's name; UserError if it escapes the folder."""
    posix = name.replace("\\", "/")
    if "\x00" in posix:
        raise UserError(f"archive member {name!r} has a NUL byte in its name; refusing to extract")
    if posix.startswith("/") or (len(posix) >= 2 and posix[1] == ":" and posix[0].isalpha()):
        raise UserError(f"archive member {name!r} has an absolute path; refusing to extract")
    parts = tuple(p for p in PurePosixPath(posix).parts if p not in ("", "."))
    if ".." in parts:
        raise UserError(f"archive member {name!r} points outside the archive folder (..); refusing to extract")
    return parts


def _skipped(parts: tuple[str, ...]) -> bool:
    """Hidden files and folders, macOS resource forks: never extracted."""
    return not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _archive_kind(path: Path) -> str:
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, tarfile.TarError, EOFError):
        pass
    raise UserError(
        f"{path.name} is not a zip or tar archive; upload a .zip, .tar or .tar.gz of an image folder"
    )


class _Budget:
    """Counts what an extraction wrote, against the caps."""

    def __init__(self, archive: Path, max_total_bytes: int, max_files: int, max_ratio: float):
        self.archive = archive
        self.max_total_bytes = max_total_bytes
        self.max_files = max_files
        self.max_ratio = max_ratio
        self.max_entries = 4 * max_files + 1000
        self.total = 0
        self.files = 0
        self.entries = 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise UserError(
                f"{self.archive.name} has more than {self.max_entries} entries; the limit is "
                f"{self.max_files} files"
            )

    def file(self) -> None:
        self.files += 1
        if self.files > self.max_files:
            raise UserError(
                f"{self.archive.name} has more than {self.max_files} files, the limit; "
                "split the dataset or upload fewer images"
            )

    def too_large(self) -> UserError:
        return UserError(
            f"{self.archive.name} unpacks to more than {self.max_total_bytes} bytes, the limit; "
            "upload a smaller dataset"
        )

    def ratio_error(self, name: str, ratio: float) -> UserError:
        return UserError(
            f"archive member {name!r} has a compression ratio of {ratio:.0f}:1, over the limit of "
            f"{self.max_ratio:.0f}:1 (a zip bomb?); refusing to extract"
        )

    def copy(self, src: IO[bytes], dst: IO[bytes], name: str, claimed: int, compressed: int | None) -> None:
        """Copies src to dst, counting the actual bytes: a header's claim is not trusted."""
        written = 0
        while True:
            chunk = src.read(_COPY_CHUNK)
            if not chunk:
                break
            written += len(chunk)
            self.total += len(chunk)
            if self.total > self.max_total_bytes:
                raise self.too_large()
            if written > claimed:
                raise UserError(f"archive member {name!r} holds more bytes than its header says; refusing to extract")
            if compressed is not None and written >= RATIO_CHECK_MIN_BYTES:
                ratio = written / max(compressed, 1)
                if ratio > self.max_ratio:
                    raise self.ratio_error(name, ratio)
            dst.write(chunk)


def _write_member(root: Path, parts: tuple[str, ...], name: str, made: set[tuple[str, ...]]) -> IO[bytes]:
    target = os.path.join(root, *parts)
    try:
        if parts[:-1] not in made:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            made.add(parts[:-1])
        return open(target, "xb")
    except FileExistsError:
        raise UserError(f"archive member {name!r} appears twice; refusing to extract") from None
    except (NotADirectoryError, IsADirectoryError):
        raise UserError(f"archive member {name!r} clashes with a file or folder of the same name") from None
    except OSError as exc:
        if is_disk_error(exc):  # the server's disk, not the user's archive
            raise
        raise UserError(f"cannot extract archive member {name!r}: {exc.strerror or exc}") from None


def _make_dir(root: Path, parts: tuple[str, ...], name: str) -> None:
    try:
        root.joinpath(*parts).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_error(exc):
            raise
        raise UserError(f"archive member {name!r} clashes with a file of the same name") from None


def _extract_zip(archive: Path, root: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        plan: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
        claimed = 0
        for info in zf.infolist():
            budget.entry()
            parts = _member_parts(info.filename)
            if _skipped(parts):
                continue
            mode = info.external_attr >> 16
            if mode and (stat.S_ISLNK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
                raise UserError(
                    f"archive member {info.filename!r} is a link or device; archives may hold only "
                    "regular files and folders"
                )
            if info.flag_bits & 0x1:
                raise UserError(f"archive member {info.filename!r} is encrypted; upload an unencrypted archive")
            plan.append((info, parts))
            if info.is_dir():
                continue
            budget.file()
            claimed += info.file_size
            if claimed > budget.max_total_bytes:
                raise budget.too_large()
            if info.file_size >= RATIO_CHECK_MIN_BYTES:
                ratio = info.file_size / max(info.compress_size, 1)
                if ratio > budget.max_ratio:
                    raise budget.ratio_error(info.filename, ratio)
        made: set[tuple[str, ...]] = set()
        for info, parts in plan:
            if info.is_dir():
                _make_dir(root, parts, info.filename)
                continue
            with zf.open(info) as src, _write_member(root, parts, info.filename, made) as dst:
                budget.copy(src, dst, info.filename, info.file_size, info.compress_size)


def _extract_tar(archive: Path, root: Path, budget: _Budget) -> None:
    compressed_size = archive.stat().st_size
    with tarfile.open(archive, "r:*") as tf:
        claimed = 0
        made: set[tuple[str, ...]] = set()
        for member in tf:
            budget.entry()
            parts = _member_parts(member.name)
            if member.issym() or member.islnk():
                raise UserError(
                    f"archive member {member.name!r} is a {'symbolic' if member.issym() else 'hard'} link; "
                    "archives may hold only regular files and folders"
                )
            if member.ischr() or member.isblk() or member.isfifo():
                raise UserError(
                    f"archive member {member.name!r} is a device or pipe; archives may hold only "
                    "regular files and folders"
                )
            if _skipped(parts):
                continue
            if member.isdir():
                _make_dir(root, parts, member.name)
                continue
            if not member.isreg():
                raise UserError(
                    f"archive member {member.name!r} is not a regular file or folder; refusing to extract"
                )
            budget.file()
            claimed += member.size
            if claimed > budget.max_total_bytes:
                raise budget.too_large()
            src = tf.extractfile(member)
            assert src is not None  # a regular file always has content
            with src, _write_member(root, parts, member.name, made) as dst:
                budget.copy(src, dst, member.name, member.size, None)
            # A tar's members are compressed as one stream: cap the whole archive's ratio.
            if budget.total >= RATIO_CHECK_MIN_BYTES:
                ratio = budget.total / max(compressed_size, 1)
                if ratio > budget.max_ratio:
                    raise budget.ratio_error(member.name, ratio)


def safe_extract(
    archive_path: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    max_total_bytes: int,
    max_files: int,
    max_ratio: float = 200.0,
) -> int:
    """Extracts a .zip, .tar or .tar.gz/.tgz of untrusted origin into `dest_dir`; returns the file count.

    Rejected with a UserError: a member whose path escapes `dest_dir` (absolute, `..`); links,
    devices and pipes; encrypted members; more than `max_files` files; more than
    `max_total_bytes` unpacked (counted while extracting, not only from the headers); a member
    of at least `RATIO_CHECK_MIN_BYTES` whose compression ratio exceeds `max_ratio` (for a
    compressed tar: the whole stream's ratio). Hidden files and `__MACOSX/` are skipped.

    Extraction goes to a temporary folder beside `dest_dir`, renamed at the end: on any
    failure nothing is left behind. `dest_dir` must not exist, or be an empty folder.
    """
    archive = Path(archive_path)
    dest = Path(dest_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} exists and is not an empty folder")
    if not archive.is_file():
        raise UserError(f"{archive} is not a file")
    kind = _archive_kind(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    budget = _Budget(archive, max_total_bytes, max_files, max_ratio)
    try:
        try:
            if kind == "zip":
                _extract_zip(archive, tmp, budget)
            else:
                _extract_tar(archive, tmp, budget)
        except UserError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, NotImplementedError) as exc:
            raise UserError(f"{archive.name} is not a valid {kind} archive: {exc}") from None
        except OSError as exc:
            if is_disk_error(exc):  # a full or read-only volume: the server's problem
                raise
            raise UserError(f"{archive.name} is damaged and cannot be extracted: {exc}") from None
        except (ValueError, RuntimeError, zlib.error) as exc:  # zlib/CRC errors, truncated streams
            raise UserError(f"{archive.name} is damaged and cannot be extracted: {exc}") from None
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return budget.files
