"""Pictures of an uploaded dataset, for the dashboard: a few of its images as small PNG
thumbnails (Pillow, read straight from the stored files), and its augmented views made by
`dcl show-augment` in a bounded subprocess (the API process never imports torch).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from dcl_core.data.decode import decode_image
from dcl_core.data.stored import DATASET_NPZ_FILE, dataset_layout
from dcl_core.data.tree import list_images
from dcl_core.errors import UserError

THUMBNAIL_PX = 96


def _png_data_url(image: Image.Image) -> str:
    image = image.convert("RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.BICUBIC)
    if max(image.size) < THUMBNAIL_PX:  # tiny images (8 px digits): scale up, crisp
        scale = THUMBNAIL_PX // max(image.size)
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def spread(total: int, n: int) -> list[int]:
    """`n` indices spread evenly over range(total) (so every class of a class-sorted tree shows)."""
    n = min(n, total)
    return [i * total // n for i in range(n)]


def _npz_rows(path: Path, n: int) -> tuple[list[int], np.ndarray, np.ndarray | None, list[str] | None]:
    """`n` rows of an .npz's `x`, spread over it, reading the array only up to the last of them."""
    with zipfile.ZipFile(path) as archive, archive.open("x.npy") as stream:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(stream)
        if fortran or dtype != np.uint8 or not shape:
            raise UserError("the .npz's x array is not a C-ordered uint8 array")
        indices = spread(int(shape[0]), n)
        if not indices:
            return [], np.zeros((0,), np.uint8), None, None
        row_bytes = int(np.prod(shape[1:]))
        wanted = indices[-1] + 1
        rows = np.frombuffer(stream.read(row_bytes * wanted), dtype=np.uint8).reshape((wanted, *shape[1:]))[indices]
    with np.load(path, allow_pickle=False) as npz:
        labels = npz["y"][indices] if "y" in npz.files else None
        classes = [str(c) for c in npz["classes"].tolist()] if "classes" in npz.files else None
    return indices, rows, labels, classes


def _npz_items(path: Path, items: list[int]) -> tuple[list[int], np.ndarray, np.ndarray | None, list[str] | None]:
    """The rows `items` of an .npz's `x` (those past its end left out), read one row at a time: a
    stored member is seeked into, a compressed one decompressed forward, never held whole."""
    with zipfile.ZipFile(path) as archive, archive.open("x.npy") as stream:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(stream)
        if fortran or dtype != np.uint8 or not shape:
            raise UserError("the .npz's x array is not a C-ordered uint8 array")
        start = stream.tell()
        row_bytes = int(np.prod(shape[1:]))
        wanted = sorted({i for i in items if 0 <= i < int(shape[0])})
        rows = np.zeros((len(wanted), *shape[1:]), np.uint8)
        for k, index in enumerate(wanted):
            stream.seek(start + index * row_bytes)
            rows[k] = np.frombuffer(stream.read(row_bytes), dtype=np.uint8).reshape(shape[1:])
    with np.load(path, allow_pickle=False, mmap_mode=None) as npz:
        labels = npz["y"][wanted] if "y" in npz.files and wanted else None
        classes = [str(c) for c in npz["classes"].tolist()] if "classes" in npz.files else None
    return wanted, rows, labels, classes


_listings: dict[str, tuple] = {}
"""Image-tree listings by folder (a stored dataset never changes): thumbnails on hover must not
walk a large tree each time."""


def _listing(data: Path) -> tuple:
    key = str(data)
    if key not in _listings:
        if len(_listings) >= 8:
            _listings.pop(next(iter(_listings)))
        _listings[key] = list_images(data)
    return _listings[key]


def _sample(index: int, image: Image.Image, size: tuple[int, int], label, classes) -> dict:
    label = int(label) if label is not None else None
    name = classes[label] if classes and label is not None and 0 <= label < len(classes) else None
    return {"index": index, "label": label, "class": name, "width": size[0], "height": size[1],
            "src": _png_data_url(image)}


def dataset_samples(dataset_dir: Path, n: int, items: list[int] | None = None) -> list[dict]:
    """[{index, label, class, width, height, src}] for `n` images spread over the dataset, or for
    the images `items` (indices in dataset order; those past its end left out)."""
    data = dataset_layout(dataset_dir)
    if data.name == DATASET_NPZ_FILE:
        indices, rows, labels, classes = _npz_items(data, items) if items is not None else _npz_rows(data, n)
        if rows.ndim == 4 and rows.shape[3] == 1:  # (N, H, W, 1): grey
            rows = rows[..., 0]
        return [_sample(index, Image.fromarray(rows[k]), (rows.shape[2], rows.shape[1]),
                        labels[k] if labels is not None else None, classes) for k, index in enumerate(indices)]
    paths, labels, classes = _listing(data) if items is not None else list_images(data)
    samples = []
    chosen = sorted({i for i in items if 0 <= i < len(paths)}) if items is not None else spread(len(paths), n)
    for index in chosen:
        try:
            image, size = decode_image(paths[index], draft_size=(THUMBNAIL_PX, THUMBNAIL_PX))
        except Exception:  # removed or unreadable since the upload: show the others
            continue
        samples.append(_sample(index, image, size, labels[index] if labels is not None else None, classes))
    return samples


def torch_available() -> bool:
    """Whether this host could run `dcl show-augment` (torch installed); never imports torch."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # ValueError: blocked with sys.modules["torch"] = None
        return False


class PreviewUnavailable(Exception):
    """torch is not installed on the API's host (the slim API image)."""


def augment_preview(dataset_dir: Path, augment: dict, *, n: int, views: int, image_size: int, seed: int,
                    timeout_s: float) -> bytes:
    """The PNG `dcl show-augment` draws for the dataset's first `n` images and this augment config."""
    data = dataset_layout(dataset_dir).resolve()  # the subprocess runs in its own folder
    with tempfile.TemporaryDirectory(prefix="dcl-preview-") as work:
        out = Path(work) / "views.png"
        cmd = [sys.executable, "-m", "dcl_core.cli", "show-augment", str(data), "--out", str(out),
               "--n", str(n), "--views", str(views), "--image-size", str(image_size), "--seed", str(seed),
               "--augment", json.dumps(augment), "--cache-dir", work]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=work)
        except subprocess.TimeoutExpired:
            raise UserError(f"the preview took longer than {timeout_s:.0f}s; ask for fewer images or views") from None
        if done.returncode != 0:
            message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
            if "No module named 'torch'" in done.stderr or "import of torch halted" in done.stderr:
                raise PreviewUnavailable(message)
            raise UserError(_public(message.removeprefix("error: "), Path(dataset_dir), Path(work)))
        return out.read_bytes()


def _public(message: str, dataset: Path, work: Path) -> str:
    """The message without the server's folders (an API answer never shows where files live)."""
    for path, name in ((dataset.resolve(), "the dataset"), (dataset, "the dataset"), (work.resolve(), "."), (work, ".")):
        message = message.replace(str(path), name)
    return message
