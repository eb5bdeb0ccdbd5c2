"""Image trees: which files of a folder are images, and their labels (`list_images`).

- class subfolders (`root/CLASS/**/x.jpg`) are labelled: labels index the sorted folder names;
- images directly under root are unlabelled;
- a single top folder holding no images of its own (`cifar/CLASS/x.jpg`) is unwrapped;
- hidden files and folders (a leading `.`) and `__MACOSX/` are ignored, and so are files
  whose suffix is not an image suffix (a README, a labels.csv); they are reported as `ignored`.

Standard library only: the API lists uploads with it, so what it accepts is what the engine loads.
"""

from __future__ import annotations

import os
from pathlib import Path

from dcl_core.errors import UserError

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


def list_tree(root: Path) -> tuple[Path, list[Path], list[int] | None, list[str] | None, list[Path]]:
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
    _, paths, labels, classes, _ = list_tree(Path(root))
    return paths, labels, classes


def relative_name(path: Path, base: Path) -> str:
    """A file's name in messages: relative to the dataset's folder."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)
