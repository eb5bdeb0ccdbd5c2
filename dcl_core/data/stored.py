"""Stored datasets: an upload to the service (`dataset:ID`) is a folder that holds either
`images/` (an extracted image tree) or `data.npz`; `store_dataset` writes one, `dataset_layout`
reads it. Torch-free (the API stores uploads with it)."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Iterable

from dcl_core.data.archive import safe_extract
from dcl_core.data.inspection import DatasetSummary, inspect_images, inspect_npz
from dcl_core.errors import UserError

DATASET_IMAGES_DIR = "images"
DATASET_NPZ_FILE = "data.npz"


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
