"""An embed job's nearest-neighbour index, searched with numpy alone (the API reads it; no torch).

Files (in the job's run folder):
- `index.npy`: the L2-normalised features, float32 (N, D), row i = item i of the dataset, so a
  dot product is the cosine similarity;
- `index.json`: {"kind": "exact"|"ivf", "items", "dim", "metric": "cosine", for "exact" "graph_k",
  and for "ivf" "lists", "nprobe", "recall_at_10" (measured against exact search on a sample),
  "recall_queries"};
- for "exact": `index_graph.npy` (N, graph_k) int32, each item's nearest other items, and
  `index_graph_scores.npy` their cosine similarities (float32), from an exact search;
- for "ivf" (above `EXACT_MAX` items) an inverted-file index (Sivic and Zisserman 2003; Jégou et
  al. 2011, IVF without compression): `index_centroids.npy` (L, D) unit vectors from spherical
  k-means, `index_lists.npy` (N,) the items grouped by nearest centroid and
  `index_offsets.npy` (L + 1,) where each list starts. A query scores the `nprobe` lists whose
  centroids are nearest, exactly, and returns the best of those.

Arrays are memory-mapped (a search reads the rows it needs) and checked against a size cap
before they are opened, so a search never loads an index whole into the reader's heap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

FEATURES = "index.npy"
META = "index.json"
CENTROIDS = "index_centroids.npy"
LISTS = "index_lists.npy"
OFFSETS = "index_offsets.npy"
GRAPH = "index_graph.npy"
GRAPH_SCORES = "index_graph_scores.npy"
GRAPH_K = 64
"""An exact index also stores each item's GRAPH_K nearest items, so that an item's neighbours are
a row read, not a pass over every feature."""

EXACT_MAX = 100_000
"""Up to this many items the index is searched exactly (a matrix product); above, through IVF."""
MAX_ITEMS = 2_000_000
"""`"index": null` builds an index for datasets up to this many images."""
MAX_K = 1000
BLOCK_ROWS = 32_768
"""Rows scored at once by an exact search: its temporaries stay at BLOCK_ROWS floats."""


class BadIndex(ValueError):
    """The index files are missing, damaged or over the reader's size cap."""


def open_array(path: Path | None, *, dtype, ndim: int, max_bytes: int) -> np.ndarray:
    """A memory-mapped .npy, checked: dtype, rank, and the file's size against `max_bytes`."""
    if path is None or not Path(path).is_file():
        raise BadIndex(f"{Path(path).name if path else 'an index file'} is missing")
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise BadIndex(f"{Path(path).name} is {size} bytes, over this server's cap of {max_bytes}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BadIndex(f"{Path(path).name} is not a readable .npy ({exc})") from None
    if array.dtype != np.dtype(dtype) or array.ndim != ndim:
        raise BadIndex(f"{Path(path).name} holds {array.dtype} {array.shape}, not a {ndim}-d {np.dtype(dtype)} array")
    return array


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (ids, scores), best first; equal scores by id."""
    if len(scores) > k:
        keep = np.argpartition(-scores, k - 1)[:k]
        scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order]


def exact_search(features: np.ndarray, query: np.ndarray, k: int, exclude: int | None = None,
                 block: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of `features` with the highest dot product with `query`, `exclude` left out."""
    best_ids = np.empty(0, np.int64)
    best_scores = np.empty(0, np.float32)
    for start in range(0, features.shape[0], block):
        scores = np.asarray(features[start:start + block] @ query, dtype=np.float32)
        ids = np.arange(start, start + len(scores), dtype=np.int64)
        if exclude is not None and start <= exclude < start + len(scores):
            scores[exclude - start] = -np.inf
        ids, scores = top_k(np.concatenate([best_scores, scores]), np.concatenate([best_ids, ids]), k)
        best_ids, best_scores = ids, scores
    keep = np.isfinite(best_scores)
    return best_ids[keep], best_scores[keep]


def ivf_search(features: np.ndarray, centroids: np.ndarray, lists: np.ndarray, offsets: np.ndarray,
               query: np.ndarray, k: int, nprobe: int, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores over the items of the `nprobe` lists nearest to `query`; the k best."""
    nprobe = max(1, min(nprobe, centroids.shape[0]))
    near = np.argpartition(-(centroids @ query), nprobe - 1)[:nprobe]
    candidates = np.sort(np.concatenate([lists[offsets[i]:offsets[i + 1]] for i in near]))
    if exclude is not None:
        candidates = candidates[candidates != exclude]
    if not len(candidates):
        return np.empty(0, np.int64), np.empty(0, np.float32)
    scores = np.asarray(features[candidates] @ query, dtype=np.float32)
    return top_k(scores, candidates.astype(np.int64), k)


@dataclass
class Index:
    meta: dict
    features: np.ndarray
    centroids: np.ndarray | None = None
    lists: np.ndarray | None = None
    offsets: np.ndarray | None = None
    graph: np.ndarray | None = None
    graph_scores: np.ndarray | None = None

    @classmethod
    def open(cls, path_of: Callable[[str], Path | None], max_bytes: int) -> "Index":
        """Opens the index whose files `path_of(name)` locates (None: not there)."""
        meta_path = path_of(META)
        if meta_path is None or not Path(meta_path).is_file():
            raise BadIndex(f"{META} is missing")
        try:
            meta = json.loads(Path(meta_path).read_text(encoding="utf-8")[:100_000])
        except ValueError:
            raise BadIndex(f"{META} is not JSON") from None
        features = open_array(path_of(FEATURES), dtype=np.float32, ndim=2, max_bytes=max_bytes)
        if meta.get("kind") != "ivf":
            if not meta.get("graph_k"):
                return cls(meta, features)
            graph = open_array(path_of(GRAPH), dtype=np.int32, ndim=2, max_bytes=max_bytes)
            graph_scores = open_array(path_of(GRAPH_SCORES), dtype=np.float32, ndim=2, max_bytes=max_bytes)
            if graph.shape != graph_scores.shape or graph.shape[0] != features.shape[0]:
                raise BadIndex("the neighbour graph does not match the features")
            return cls(meta, features, graph=graph, graph_scores=graph_scores)
        centroids = open_array(path_of(CENTROIDS), dtype=np.float32, ndim=2, max_bytes=max_bytes)
        lists = open_array(path_of(LISTS), dtype=np.int64, ndim=1, max_bytes=max_bytes)
        offsets = np.array(open_array(path_of(OFFSETS), dtype=np.int64, ndim=1, max_bytes=max_bytes))
        n = features.shape[0]
        if len(lists) != n or len(offsets) != centroids.shape[0] + 1 or offsets[0] != 0 or offsets[-1] != n \
                or np.any(np.diff(offsets) < 0) or centroids.shape[1] != features.shape[1]:
            raise BadIndex("the IVF lists do not match the features")
        return cls(meta, features, centroids, lists, offsets)

    @property
    def items(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def vector(self, item: int) -> np.ndarray:
        return np.array(self.features[item], dtype=np.float32)

    def neighbours(self, item: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k items nearest to `item`, itself left out: a row of the graph when it is that long."""
        if self.graph is not None and k <= self.graph.shape[1]:
            return np.asarray(self.graph[item, :k], dtype=np.int64), np.asarray(self.graph_scores[item, :k])
        return self.search(self.vector(item), k, exclude=item)

    def search(self, query: np.ndarray, k: int, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest items to a unit vector `query`, best first: (ids int64, cosine float32)."""
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if self.centroids is None:
            return exact_search(self.features, query, k, exclude)
        return ivf_search(self.features, self.centroids, self.lists, self.offsets, query, k,
                          int(self.meta.get("nprobe", 1)), exclude)


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
