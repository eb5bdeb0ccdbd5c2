"""Pictures of an uploaded dataset, for the dashboard: a few of its images as small PNG
thumbnails (Pillow, read straight from the stored files), and its augmented views made by
`dcl show-augment` in a bounded subprocess (the API process never imports torch).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from dcl_core.data.decode import decode_image
from dcl_core.data.npz_rows import array_shape, read_rows
from dcl_core.data.stored import DATASET_NPZ_FILE, dataset_layout
from dcl_core.data.tree import list_images
from dcl_core.errors import UserError
from service.api.bounded import OUT_OF_MEMORY

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


def _npz_samples(path: Path, n: int, items: list[int] | None
                 ) -> tuple[list[int], np.ndarray, tuple[int, int], np.ndarray | None, dict[int, str] | None]:
    """The rows `items` of an .npz's `x` (those past its end left out), or `n` rows spread over
    it; their (width, height), labels and class names by label. Only those rows are read
    (`npz_rows`), thinned to about 4 thumbnails a side: a huge or highly compressed file costs
    no more memory than a small one."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        shape = array_shape(archive, "x")
        total = shape[0]
        indices, rows = read_rows(archive, "x", items if items is not None else spread(total, n),
                                  max_side=4 * THUMBNAIL_PX)
        if rows.dtype != np.uint8 or rows.ndim not in (3, 4):
            raise UserError("the .npz's x array is not uint8 (N,H,W[,C]) images")
        labels = classes = None
        if "y.npy" in names and indices:
            labels = read_rows(archive, "y", indices)[1].astype(np.int64)
            if "classes.npy" in names:
                found, named = read_rows(archive, "classes", labels.tolist())
                classes = {label: c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                           for label, c in zip(found, named.tolist())}
    return indices, rows, (shape[2], shape[1]), labels, classes


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


def _sample(index: int, image: Image.Image, size: tuple[int, int], label, classes: dict[int, str] | None) -> dict:
    label = int(label) if label is not None else None
    name = classes.get(label) if classes and label is not None else None
    return {"index": index, "label": label, "class": name, "width": size[0], "height": size[1],
            "src": _png_data_url(image)}


def dataset_samples(dataset_dir: Path, n: int, items: list[int] | None = None) -> list[dict]:
    """[{index, label, class, width, height, src}] for `n` images spread over the dataset, or for
    the images `items` (indices in dataset order; those past its end left out)."""
    data = dataset_layout(dataset_dir)
    if data.name == DATASET_NPZ_FILE:
        indices, rows, size, labels, classes = _npz_samples(data, n, items)
        if rows.ndim == 4 and rows.shape[3] == 1:  # (N, H, W, 1): grey
            rows = rows[..., 0]
        return [_sample(index, Image.fromarray(rows[k]), size,
                        labels[k] if labels is not None else None, classes) for k, index in enumerate(indices)]
    paths, labels, names = _listing(data) if items is not None else list_images(data)
    classes = dict(enumerate(names)) if names else None
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


class PreviewTooLarge(UserError):
    """The preview ran out of its address-space limit."""


def augment_preview(dataset_dir: Path, augment: dict, *, n: int, views: int, image_size: int, seed: int,
                    timeout_s: float, max_memory_bytes: int) -> bytes:
    """The PNG `dcl show-augment` draws for the dataset's first `n` images and this augment config,
    run under an address-space limit of `max_memory_bytes` (`service.api.bounded`)."""
    data = dataset_layout(dataset_dir).resolve()  # the subprocess runs in its own folder
    with tempfile.TemporaryDirectory(prefix="dcl-preview-") as work:
        out = Path(work) / "views.png"
        cmd = [sys.executable, "-m", "service.api.bounded", str(max_memory_bytes),
               "show-augment", str(data), "--out", str(out),
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
            if done.returncode == OUT_OF_MEMORY or done.returncode < 0:  # < 0: killed (a failed allocation)
                died = f" (it died of {_signal_name(-done.returncode)})" if done.returncode < 0 else ""
                raise PreviewTooLarge(
                    f"drawing it needs more than the preview's {max_memory_bytes >> 20} MiB of memory{died} "
                    "(DCL_PREVIEW_MAX_MEMORY_BYTES); ask for fewer images (n) or a smaller image_size, "
                    "or resize the dataset's images")
            raise UserError(_public(message.removeprefix("error: "), Path(dataset_dir), Path(work)))
        return out.read_bytes()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal: no name
        return f"signal {number}"


def _public(message: str, dataset: Path, work: Path) -> str:
    """The message without the server's folders (an API answer never shows where files live)."""
    for path, name in ((dataset.resolve(), "the dataset"), (dataset, "the dataset"), (work.resolve(), "."), (work, ".")):
        message = message.replace(str(path), name)
    return message
