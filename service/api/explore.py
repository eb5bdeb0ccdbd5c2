"""What the API does with an embed job's index (`dcl_core.evaluation.index`), without torch:
its neighbours (the index memory-mapped, a few kept open), and a search by an uploaded image,
which is decoded here with the dataset guards and embedded by the same encoder in a bounded
`dcl embed` subprocess, as the augment preview is drawn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dcl_core.data.decode import CorruptImage, decode_image
from dcl_core.errors import UserError
from dcl_core.evaluation.index import BadIndex, Index, normalise

LABELS = "embeddings_labels.npy"
SEARCH_MAX_BYTES = 16 * 1024 * 1024
"""Largest image a search takes (413 above)."""
SEARCH_MAX_PIXELS = 40_000_000
"""Largest image a search decodes (width x height; about 120 MB as RGB): 422 above."""
SEARCH_TIMEOUT_S = 60.0
OPEN_INDEXES = 8


@dataclass
class JobIndex:
    index: Index
    labels: np.ndarray | None
    stamp: tuple

    def label(self, item: int) -> int | None:
        if self.labels is None or item >= len(self.labels):
            return None
        return int(self.labels[item])


_open: OrderedDict[str, JobIndex] = OrderedDict()
_lock = threading.Lock()


def open_index(job_id: str, path_of, max_bytes: int) -> JobIndex:
    """The job's index, opened once and kept (at most OPEN_INDEXES; reopened when its files change)."""
    meta = path_of("index.json")
    try:
        stat = Path(meta).stat() if meta is not None else None
    except OSError:
        stat = None
    if stat is None:
        raise BadIndex("index.json is missing")
    stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    with _lock:
        found = _open.get(job_id)
        if found is not None and found.stamp == stamp:
            _open.move_to_end(job_id)
            return found
    index = Index.open(path_of, max_bytes)
    labels = None
    labels_path = path_of(LABELS)
    if labels_path is not None and Path(labels_path).is_file():
        labels = np.load(labels_path, mmap_mode="r", allow_pickle=False)
        if labels.dtype != np.int64 or labels.shape != (index.items,):
            raise BadIndex(f"{LABELS} does not match the index")
    opened = JobIndex(index, labels, stamp)
    with _lock:
        _open[job_id] = opened
        _open.move_to_end(job_id)
        while len(_open) > OPEN_INDEXES:
            _open.popitem(last=False)
    return opened


def answer(found: JobIndex, ids: np.ndarray, scores: np.ndarray) -> list[dict]:
    return [{"item": int(i), "score": round(float(s), 6), "label": found.label(int(i))} for i, s in zip(ids, scores)]


def neighbours(found: JobIndex, item: int, k: int) -> dict:
    ids, scores = found.index.neighbours(item, k)
    return {"item": item, "label": found.label(item), "items": answer(found, ids, scores)}


def decode_query(path: Path, out: Path) -> tuple[int, int]:
    """Decodes an uploaded image with the dataset guards (Pillow's image formats only, a pixel cap
    read from the header before any pixel is decoded) and writes it as an RGB PNG to `out`."""
    try:
        with open(path, "rb") as handle:
            probe = Image.open(handle, formats=("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM"))
            width, height = probe.size
    except Image.DecompressionBombError:
        raise UserError("file: the image has more pixels than this server decodes (a decompression bomb?); "
                        "send a smaller copy") from None
    except Exception:
        raise UserError("file: not an image in a supported format (JPEG, PNG, BMP, GIF, WebP, TIFF, PPM)") from None
    if width * height > SEARCH_MAX_PIXELS:
        raise UserError(f"file: the image is {width}x{height} pixels, over the {SEARCH_MAX_PIXELS} this search "
                        "decodes; send a smaller copy (the encoder sees it at a few dozen pixels)")
    try:
        image, _ = decode_image(path, draft_size=(512, 512))
    except CorruptImage as exc:
        raise UserError(f"file: the image cannot be decoded ({exc})") from None
    with image:
        image.convert("RGB").save(out, format="PNG")
    return width, height


class SearchUnavailable(Exception):
    """torch is not installed on the API's host (the slim API image)."""


def embed_query(folder: Path, encoder_dir: Path, image_size: int, timeout_s: float = SEARCH_TIMEOUT_S) -> np.ndarray:
    """The encoder's unit feature vector of the one image in `folder`, from `dcl embed` in a
    subprocess (its own CPU thread, at most `timeout_s`)."""
    out = folder.parent / "query.npy"
    spec = json.dumps({"source": str(folder), "image_size": int(image_size)})
    cmd = [sys.executable, "-m", "dcl_core.cli", "embed", "--encoder", str(encoder_dir), "--data", spec,
           "--out", str(out), "--device", "cpu", "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=folder.parent)
    except subprocess.TimeoutExpired:
        raise UserError(f"embedding the image took longer than {timeout_s:.0f}s; try again when the server "
                        "is less busy") from None
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        if "No module named 'torch'" in done.stderr or "import of torch halted" in done.stderr:
            raise SearchUnavailable(message)
        raise UserError(message.removeprefix("error: "))
    return normalise(np.load(out, allow_pickle=False).reshape(-1))


def search(found: JobIndex, upload: Path, encoder_dir: Path, image_size: int, k: int) -> dict:
    """The k items nearest to an uploaded image: {"query": {width, height}, "items": [...]}."""
    with tempfile.TemporaryDirectory(prefix="dcl-search-") as work:
        folder = Path(work) / "query"
        folder.mkdir()
        width, height = decode_query(upload, folder / "query.png")
        query = embed_query(folder, encoder_dir, image_size)
    if query.shape[0] != found.index.dim:
        raise BadIndex(f"the encoder gives {query.shape[0]} features and the index holds {found.index.dim}")
    ids, scores = found.index.search(query, k)
    return {"query": {"width": width, "height": height}, "items": answer(found, ids, scores)}
