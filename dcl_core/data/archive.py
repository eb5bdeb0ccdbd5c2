"""Untrusted uploads: safe archive extraction and image-dataset inspection.

Imports only the standard library, Pillow and numpy (never torch): the API validates
uploads with it. `dcl_core.data.sources` uses the same listing and decoding rules, so what the API
accepts is exactly what the engine loads.

A stored dataset (an upload to the service, `dataset:ID`) is a folder that holds either
`images/` (an extracted image tree) or `data.npz` (see `dataset_layout` and `store_dataset`).

Image trees (`list_images`):
- class subfolders (`root/CLASS/**/x.jpg`) are labelled: labels index the sorted folder names;
- images directly under root are unlabelled;
- a single top folder holding no images of its own (`cifar/CLASS/x.jpg`) is unwrapped;
- hidden files and folders (a leading `.`) and `__MACOSX/` are ignored, and so are files
  whose suffix is not an image suffix (a README, a labels.csv); they are reported as `ignored`.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable, TypeVar

import numpy as np
from PIL import Image

from dcl_core.errors import UserError
from dcl_core.files import is_disk_error
from dcl_core.data.npz import MAX_CLASSES, RATIO_CHECK_MIN_BYTES, check_npz

IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
"""Pillow format ids that images are decoded with (never any other of Pillow's plugins)."""

IMAGE_SUFFIXES: dict[str, str] = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF",
    ".ppm": "PPM", ".pgm": "PPM", ".pbm": "PPM", ".pnm": "PPM",
}
"""File suffixes (lower case) counted as images, and the format each is expected to be."""

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")

DATASET_IMAGES_DIR = "images"
DATASET_NPZ_FILE = "data.npz"

MAX_LISTED = 10
"""How many file names an error message lists."""

SUMMARY_CLASS_CHARS = 32_000
SUMMARY_LISTED_FILES = 100
SUMMARY_LISTED_CHARS = 16_000
"""Bounds on a stored summary (see `DatasetSummary.to_dict`): every dataset listing returns it."""

_COPY_CHUNK = 1 << 20


# --------------------------------------------------------------------------- extraction


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


# --------------------------------------------------------------------------- listing


def _visible(entry: os.DirEntry[str]) -> bool:
    return not entry.name.startswith(".") and entry.name != "__MACOSX"


def _scan(folder: Path) -> tuple[list[os.DirEntry[str]], list[os.DirEntry[str]]]:
    """(subfolders, files) directly in folder, visible ones only, sorted by name."""
    dirs, files = [], []
    with os.scandir(folder) as it:
        for entry in it:
            if not _visible(entry):
                continue
            if entry.is_dir(follow_symlinks=False):
                dirs.append(entry)
            elif entry.is_file(follow_symlinks=False):
                files.append(entry)
    dirs.sort(key=lambda e: e.name)
    files.sort(key=lambda e: e.name)
    return dirs, files


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _walk_files(folder: Path) -> list[Path]:
    """Every visible regular file under folder, recursively, in sorted order."""
    out: list[Path] = []
    dirs, files = _scan(folder)
    out.extend(Path(f.path) for f in files)
    for d in dirs:
        out.extend(_walk_files(Path(d.path)))
    return out


def _tree_root(root: Path) -> Path:
    """Unwraps single top folders that hold no images of their own."""
    while True:
        dirs, files = _scan(root)
        if len(dirs) == 1 and not any(is_image_name(f.name) for f in files):
            root = Path(dirs[0].path)
        else:
            return root


def _list_tree(root: Path) -> tuple[Path, list[Path], list[int] | None, list[str] | None, list[Path]]:
    """(tree root, images, labels, classes, ignored non-image files)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder")
    root = _tree_root(root)
    dirs, files = _scan(root)
    top_images = [Path(f.path) for f in files if is_image_name(f.name)]
    ignored = [Path(f.path) for f in files if not is_image_name(f.name)]
    per_class: list[list[Path]] = []
    for d in dirs:
        found = _walk_files(Path(d.path))
        per_class.append([p for p in found if is_image_name(p.name)])
        ignored.extend(p for p in found if not is_image_name(p.name))
    in_folders = sum(len(c) for c in per_class)
    if top_images and in_folders:
        raise UserError(
            f"{root.name or root}: {len(top_images)} images lie directly in the top folder and "
            f"{in_folders} in subfolders; put every image in a class folder (labelled) or all in "
            "the top folder (unlabelled)"
        )
    if in_folders:
        classes = [d.name for d in dirs]
        paths = [p for c in per_class for p in c]
        labels = [i for i, c in enumerate(per_class) for _ in c]
        return root, paths, labels, classes, ignored
    return root, top_images, None, None, ignored


def list_images(root: str | os.PathLike[str]) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """The image files of a tree, sorted (class by class, then by path), with labels and classes.

    Class subfolders give labels (indices into the sorted folder names, every visible
    subfolder a class, empty ones included); images directly under the root are unlabelled
    (labels and classes None). A single top folder without images of its own is unwrapped.
    Files without an image suffix are left out. Does not open any file.
    """
    _, paths, labels, classes, _ = _list_tree(Path(root))
    return paths, labels, classes


# --------------------------------------------------------------------------- decoding


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


def corrupt_error(names: Iterable[str], total: int) -> UserError:
    """The error for unreadable files without skip_corrupt: names up to MAX_LISTED of them."""
    names = list(names)[:MAX_LISTED]
    more = f" and {total - len(names)} more" if total > len(names) else ""
    return UserError(
        f"{total} file(s) cannot be read as images: {'; '.join(names)}{more}. "
        "Remove them, or set skip_corrupt: true to skip them"
    )


# --------------------------------------------------------------------------- inspection


@dataclass
class DatasetSummary:
    """What an upload holds. `sizes`: the most common (width, height, count); `corrupt`: the
    unreadable files (relative paths); `ignored`: files without an image suffix (first 100)."""

    num_images: int
    classes: list[str] | None
    class_counts: dict[str, int] | None
    sizes: list[tuple[int, int, int]]
    corrupt: list[str] = field(default_factory=list)
    labelled: bool = False
    ignored: list[str] = field(default_factory=list)
    format: str = "images"  # "images" or "npz"

    def to_dict(self) -> dict:
        """JSON-ready and bounded in size whatever the dataset holds: class names are listed
        while their total length stays under SUMMARY_CLASS_CHARS (`num_classes` says how many
        there are, `classes_truncated` whether some were left out); `corrupt` and `ignored`
        list at most SUMMARY_LISTED_FILES names (`num_corrupt` counts them all).
        In all under about 100 KB."""
        d = asdict(self)
        d["sizes"] = [{"width": w, "height": h, "count": c} for w, h, c in self.sizes]
        if self.classes is not None:
            kept, chars = [], 0
            for name in self.classes:
                chars += len(name) + 16  # the name twice (classes, class_counts) and a count
                if chars > SUMMARY_CLASS_CHARS:
                    break
                kept.append(name)
            d["classes"] = kept
            if self.class_counts is not None:
                d["class_counts"] = {name: self.class_counts[name] for name in kept if name in self.class_counts}
            d["num_classes"] = len(self.classes)
            d["classes_truncated"] = len(kept) < len(self.classes)
        d["num_corrupt"] = len(self.corrupt)
        d["corrupt"] = _first_names(self.corrupt)
        d["ignored"] = _first_names(self.ignored)
        return d


def _first_names(names: list[str]) -> list[str]:
    """At most SUMMARY_LISTED_FILES names, and fewer when long (SUMMARY_LISTED_CHARS in all)."""
    kept, chars = [], 0
    for name in names[:SUMMARY_LISTED_FILES]:
        chars += len(name)
        if chars > SUMMARY_LISTED_CHARS:
            break
        kept.append(name)
    return kept


def inspect_images(root: str | os.PathLike[str], *, skip_corrupt: bool) -> DatasetSummary:
    """Lists and decodes every image of a tree (see `list_images`); the summary of what it holds.

    Unreadable files are listed in `corrupt` (relative paths); without `skip_corrupt` any
    of them is a UserError naming them. No readable image at all is a UserError.
    """
    _, paths, labels, classes, ignored = _list_tree(Path(root))
    base = Path(root)
    if classes is not None and len(classes) > MAX_CLASSES:
        raise UserError(f"{base.name or base} has {len(classes)} class folders, more than the limit of "
                        f"{MAX_CLASSES}; group the images into fewer classes")

    def rel(p: Path) -> str:
        return p.relative_to(base).as_posix()

    def probe(i: int) -> tuple[int, int] | str:
        try:
            im, size = decode_image(paths[i], draft_size=(1, 1))
            im.close()
            return size
        except CorruptImage as exc:
            return f"{rel(paths[i])} ({exc})"

    results = parallel_map(probe, len(paths))
    corrupt_idx = [i for i, r in enumerate(results) if isinstance(r, str)]
    corrupt_msgs = [results[i] for i in corrupt_idx]
    if corrupt_idx and not skip_corrupt:
        raise corrupt_error(corrupt_msgs, len(corrupt_idx))  # type: ignore[arg-type]
    good = [i for i, r in enumerate(results) if not isinstance(r, str)]
    if not good:
        found = f"; found {', '.join(rel(p) for p in ignored[:MAX_LISTED])}" if ignored else ""
        unreadable = f"; {len(corrupt_idx)} unreadable" if corrupt_idx else ""
        raise UserError(
            f"no images found in {base.name or base}{unreadable}{found}. Expected image files "
            f"({', '.join(sorted(set(IMAGE_SUFFIXES)))}) directly in the top folder or in class subfolders"
        )
    sizes = Counter(results[i] for i in good)
    class_counts = None
    if classes is not None and labels is not None:
        counts = Counter(labels[i] for i in good)
        class_counts = {c: counts.get(k, 0) for k, c in enumerate(classes)}
    return DatasetSummary(
        num_images=len(good),
        classes=classes,
        class_counts=class_counts,
        sizes=[(w, h, n) for (w, h), n in sizes.most_common(5)],  # type: ignore[misc]
        corrupt=[rel(paths[i]) for i in corrupt_idx],
        labelled=classes is not None,
        ignored=[rel(p) for p in ignored[:100]],
        format="images",
    )


def inspect_npz(
    path: str | os.PathLike[str],
    *,
    max_total_bytes: int | None = None,
    max_images: int | None = None,
    max_ratio: float | None = None,
    display_name: str | None = None,
) -> DatasetSummary:
    """Checks an .npz dataset with `dcl_core.data.npz.check_npz` (every member read through once, `x`
    never loaded; the caps as there) and summarises it."""
    contents = check_npz(path, max_total_bytes=max_total_bytes, max_images=max_images, max_ratio=max_ratio,
                         display_name=display_name)
    n, h, w = contents.shape[:3]
    class_counts = None
    if contents.labels is not None and contents.classes is not None:
        counts = np.bincount(contents.labels, minlength=len(contents.classes))
        class_counts = {c: int(counts[i]) for i, c in enumerate(contents.classes)}
    return DatasetSummary(
        num_images=n,
        classes=contents.classes,
        class_counts=class_counts,
        sizes=[(w, h, n)],
        labelled=contents.classes is not None,
        format="npz",
    )


# --------------------------------------------------------------------------- stored datasets


def dataset_layout(dataset_dir: str | os.PathLike[str]) -> Path:
    """A stored dataset's data: `dataset_dir/data.npz` if present, else the image tree `dataset_dir/images`."""
    dataset_dir = Path(dataset_dir)
    npz = dataset_dir / DATASET_NPZ_FILE
    if npz.is_file():
        return npz
    images = dataset_dir / DATASET_IMAGES_DIR
    if images.is_dir():
        return images
    raise UserError(
        f"dataset folder {dataset_dir} holds neither {DATASET_IMAGES_DIR}/ nor {DATASET_NPZ_FILE}; "
        "upload the dataset again"
    )


def dataset_bytes(dataset_dir: str | os.PathLike[str]) -> int:
    """What a stored dataset takes, for quotas: an image tree's file sizes; an .npz's unpacked
    size (the sum of its members, which `inspect_npz` has read through), at least its file size."""
    layout = dataset_layout(dataset_dir)
    if layout.name == DATASET_NPZ_FILE:
        with zipfile.ZipFile(layout) as zf:
            return max(layout.stat().st_size, sum(info.file_size for info in zf.infolist()))
    return sum(p.lstat().st_size for p in _walk_all(layout))


def _walk_all(folder: Path) -> Iterable[Path]:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            yield Path(root, name)


def store_dataset(
    upload: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    *,
    filename: str | None = None,
    max_total_bytes: int,
    max_files: int,
    max_ratio: float = 200.0,
    skip_corrupt: bool = False,
) -> DatasetSummary:
    """Validates an uploaded file and writes it into the `dataset_layout` of `dataset_dir`.

    `filename` (the name the user gave; default the upload's) picks the kind: `.npz` is
    checked with `inspect_npz` under the same caps as archives (`max_total_bytes` unpacked,
    `max_files` images, `max_ratio`) and copied to `data.npz`; anything else must be a zip or tar
    archive, extracted with `safe_extract` into `images/` and checked with `inspect_images`
    (with `skip_corrupt`, the unreadable files are deleted; the summary still names them).
    On failure `dataset_dir` is removed again if this call created it.
    """
    upload = Path(upload)
    dataset_dir = Path(dataset_dir)
    name = (filename or upload.name).lower()
    created = not dataset_dir.exists()
    try:
        dataset_dir.mkdir(parents=True, exist_ok=True)
        if name.endswith(".npz"):
            summary = inspect_npz(upload, max_total_bytes=max_total_bytes, max_images=max_files, max_ratio=max_ratio,
                                  display_name="the file")  # the API names the upload; never its temp name
            shutil.copyfile(upload, dataset_dir / (DATASET_NPZ_FILE + ".partial"))
            os.replace(dataset_dir / (DATASET_NPZ_FILE + ".partial"), dataset_dir / DATASET_NPZ_FILE)
            return summary
        images = dataset_dir / DATASET_IMAGES_DIR
        safe_extract(upload, images, max_total_bytes=max_total_bytes, max_files=max_files, max_ratio=max_ratio)
        summary = inspect_images(images, skip_corrupt=skip_corrupt)
        for name in summary.corrupt:  # skipped now, so no job has to skip them again
            (images / name).unlink()
        return summary
    except BaseException:
        if created:
            shutil.rmtree(dataset_dir, ignore_errors=True)
        raise


__all__ = [
    "IMAGE_FORMATS", "IMAGE_SUFFIXES", "ARCHIVE_SUFFIXES", "DatasetSummary", "CorruptImage",
    "safe_extract", "list_images", "inspect_images", "inspect_npz", "decode_image",
    "dataset_layout", "dataset_bytes", "store_dataset", "is_image_name", "parallel_map", "corrupt_error",
]
