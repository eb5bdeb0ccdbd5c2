"""Retrieval scores against hand computations, and the whole report against a plain reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcl_core.evaluation.retrieval import mislabelled, purity_per_class, ranked_scores, retrieval_report


def test_ranked_scores_match_a_hand_computation():
    # Query A: 3 relevant images in the gallery (R = 3); ranked relevance 1 0 1 | 1 0.
    # Query B: R = 2; ranked relevance 0 1 | 0 0 1.   Query C: R = 0 (its label is alone).
    relevant = np.array([[1, 0, 1, 1, 0], [0, 1, 0, 0, 1], [0, 0, 0, 0, 0]], bool)
    r = np.array([3, 2, 0])
    s = ranked_scores(relevant, r, ks=(1, 2, 5))
    np.testing.assert_array_equal(s["recall_at_1"], [1, 0, 0])
    np.testing.assert_array_equal(s["recall_at_2"], [1, 1, 0])
    np.testing.assert_array_equal(s["recall_at_5"], [1, 1, 0])
    # R-precision: A 2 of its first 3; B 1 of its first 2.
    np.testing.assert_allclose(s["r_precision"][:2], [2 / 3, 1 / 2])
    # MAP@R (Musgrave et al. 2020): A (1/3)(1/1 + 2/3) ; B (1/2)(1/2). The 4th item of A is past R.
    np.testing.assert_allclose(s["map_at_r"][:2], [(1 + 2 / 3) / 3, (1 / 2) / 2])
    assert np.isnan(s["r_precision"][2]) and np.isnan(s["map_at_r"][2])


def test_map_at_r_is_one_only_when_all_relevant_come_first():
    s = ranked_scores(np.array([[1, 1, 0], [0, 1, 1]], bool), np.array([2, 2]))
    np.testing.assert_allclose(s["map_at_r"], [1.0, 0.25])  # second: (1/2)(0 + 1/2)


def test_purity_and_mislabelled_candidates():
    labels = np.array([0, 0, 1, 1])
    neighbours = np.array([[0, 0, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 1, 1]])
    assert purity_per_class(neighbours, labels, 3) == [pytest.approx((0.75 + 0) / 2), pytest.approx(0.75), None]
    found = mislabelled(np.array([10, 11, 12, 13]), neighbours, labels)
    assert found == [{"item": 11, "label": 0, "neighbours_label": 1, "share": 0.0}]


def brute_force(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """recall@k and MAP@R straight from the definitions, one query at a time."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    recall = {1: [], 5: [], 10: []}
    maps = []
    for q in range(len(x)):
        sims = x @ x[q]
        sims[q] = -np.inf
        order = np.argsort(-sims, kind="stable")[: len(x) - 1]
        rel = y[order] == y[q]
        for k in recall:
            recall[k].append(rel[:k].any())
        r = int((y == y[q]).sum()) - 1
        if r:
            maps.append(sum(rel[:i + 1].sum() / (i + 1) for i in range(r) if rel[i]) / r)
    return {**{f"recall_at_{k}": float(np.mean(v)) for k, v in recall.items()}, "map_at_r": float(np.mean(maps))}


def test_report_equals_the_definitions_on_random_clusters():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    x = rng.normal(size=(300, 16)) + 2.0 * np.eye(16)[y]
    report = retrieval_report(torch.from_numpy(x).float(), torch.from_numpy(y), chunk_elements=5000)
    expected = brute_force(x.astype(np.float32), y)
    for name, value in expected.items():
        assert report["scores"][name] == pytest.approx(value, abs=1e-9), name
    assert report["queries"] == 300 and not report["sampled"]
    assert 0 < report["purity_at_10"] < 1 and len(report["purity_per_class"]) == 4


def test_report_samples_queries_above_the_cap():
    x = torch.randn(500, 8)
    y = torch.arange(500) % 5
    report = retrieval_report(x, y, max_queries=100)
    assert report["queries"] == 100 and report["sampled"]
    assert all(0 <= c["item"] < 500 for c in report["mislabelled"])
