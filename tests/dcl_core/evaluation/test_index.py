"""The embed job's index: exact search equal to brute force, the IVF index at recall@10 >= 0.95
on queries it was not tuned on, the files checked before they are opened."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dcl_core.evaluation import index as layout
from dcl_core.evaluation.index import BadIndex, Index, exact_search, normalise
from dcl_core.evaluation.index_build import write_index


def brute(x: np.ndarray, q: np.ndarray, k: int, exclude: int | None = None):
    scores = x @ q
    if exclude is not None:
        scores[exclude] = -np.inf
    order = np.lexsort((np.arange(len(x)), -scores))[:k]
    return order, scores[order]


def open_folder(folder, max_bytes=1 << 40) -> Index:
    return Index.open(lambda name: folder / name, max_bytes)


def test_exact_search_equals_brute_force_across_blocks():
    rng = np.random.default_rng(1)
    x = normalise(rng.normal(size=(5000, 32)))
    for row in (0, 1234, 4999):
        ids, scores = exact_search(x, x[row], 10, exclude=row, block=700)
        want_ids, want_scores = brute(x, x[row], 10, exclude=row)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-6)
        assert row not in ids
    ids, _ = exact_search(x[:5], x[0], 10, exclude=0)
    assert sorted(ids.tolist()) == [1, 2, 3, 4]  # k past the gallery: the rest, the query left out


def test_written_exact_index_searches_like_numpy(tmp_path):
    features = torch.randn(3000, 24)
    meta = write_index(tmp_path, features)
    assert meta == {"kind": "exact", "items": 3000, "dim": 24, "metric": "cosine", "graph_k": layout.GRAPH_K}
    assert json.loads((tmp_path / layout.META).read_text()) == meta
    index = open_folder(tmp_path)
    x = normalise(features.numpy())
    np.testing.assert_allclose(index.features, x, atol=1e-6)
    for item in (0, 5, 2999):
        want_ids, want_scores = brute(np.asarray(index.features), index.vector(item), 100, item)
        for k in (10, layout.GRAPH_K, 100):  # the stored graph, then a search past its width
            ids, scores = index.neighbours(item, k)
            np.testing.assert_array_equal(ids, want_ids[:k])
            np.testing.assert_allclose(scores, want_scores[:k], atol=1e-5)
        ids, _ = index.search(index.vector(item), 10, exclude=item)
        np.testing.assert_array_equal(ids, want_ids[:10])


def clustered(n: int, dim: int, clusters: int, seed: int) -> torch.Tensor:
    """Points around random centres, as embeddings of a dataset with classes are."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    return centres[torch.randint(0, clusters, (n,), generator=g)] + 0.7 * torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("data", ["clustered", "uniform"])
def test_ivf_index_recall_at_10_against_exact_search(tmp_path, data):
    features = clustered(8000, 32, 50, seed=2) if data == "clustered" else torch.randn(8000, 32)
    meta = write_index(tmp_path, features, exact_max=1000)
    assert meta["kind"] == "ivf" and meta["recall_at_10"] >= 0.95 and 1 <= meta["nprobe"] <= meta["lists"]
    index = open_folder(tmp_path)
    assert index.centroids is not None
    x = np.asarray(index.features)
    rng = np.random.default_rng(3)
    queries = normalise(features[:300].numpy() + 0.3 * rng.normal(size=(300, 32)).astype(np.float32))  # not items
    found = 0
    for q in queries:
        ids, scores = index.search(q, 10)
        want, _ = brute(x, q, 10)
        found += len(set(ids.tolist()) & set(want.tolist()))
        assert np.all(np.diff(scores) <= 0)
    assert found / (10 * len(queries)) >= 0.95


def test_ivf_leaves_the_query_item_out(tmp_path):
    write_index(tmp_path, clustered(3000, 16, 10, seed=4), exact_max=100)
    index = open_folder(tmp_path)
    for item in (0, 1500):
        ids, _ = index.search(index.vector(item), 5, exclude=item)
        assert item not in ids.tolist() and len(ids) == 5


def test_index_files_are_checked_before_use(tmp_path):
    write_index(tmp_path, torch.randn(100, 8))
    with pytest.raises(BadIndex, match="over this server's cap"):
        open_folder(tmp_path, max_bytes=1000)
    np.save(tmp_path / layout.FEATURES, np.zeros((4, 4), np.float64))
    with pytest.raises(BadIndex, match="not a 2-d float32"):
        open_folder(tmp_path)
    (tmp_path / layout.FEATURES).write_bytes(b"not an npy")
    with pytest.raises(BadIndex, match="not a readable"):
        open_folder(tmp_path)
    (tmp_path / layout.META).unlink()
    with pytest.raises(BadIndex, match="missing"):
        open_folder(tmp_path)
