"""Retrieval scores of an embedding, with labels as relevance: every image is a query against
all the others (itself left out), ranked by cosine similarity.

- recall@k: the fraction of queries with at least one image of their own label among their k
  nearest neighbours: the metric-learning "Recall@K" (Oh Song et al. 2016, "Deep Metric Learning
  via Lifted Structured Feature Embedding", and the retrieval literature after it). Not the
  recall of an approximate index against exact search (`dcl_core.evaluation.index`).
- R-precision and MAP@R (Musgrave, Belongie and Lim 2020, "A Metric Learning Reality Check",
  section 3.2): for a query with R other images of its label, R-precision = r / R with r the
  relevant images among its R nearest, and MAP@R = (1/R) * sum over i = 1..R of P(i) * rel(i),
  P(i) the precision among the i nearest and rel(i) whether the i-th is relevant. A query whose
  label no other image carries (R = 0) is left out of both.
- purity@k of a class: the mean, over its images, of the share of their k nearest neighbours
  that carry their label. Images whose neighbours mostly carry another label are listed as
  possibly mislabelled.

`ranked_scores` is the arithmetic on one ranked relevance matrix (numpy); `retrieval_report`
ranks an embedding on its device (torch) and applies it, on a seeded sample of at most
`MAX_QUERIES` images (the sample is then both the queries and the gallery).
"""

from __future__ import annotations

from typing import Any

import numpy as np

RECALL_KS = (1, 5, 10)
PURITY_K = 10
MAX_QUERIES = 10_000
MISLABELLED_SHARE = 0.3
"""An image is a mislabelled candidate when at most this share of its PURITY_K neighbours carry
its label and most of them carry one other label."""
MAX_MISLABELLED = 200


def ranked_scores(relevant: np.ndarray, r: np.ndarray, ks: tuple[int, ...] = RECALL_KS) -> dict[str, np.ndarray]:
    """Per-query scores from `relevant` (Q, K) bool, the relevance of each query's K nearest in
    rank order, and `r` (Q,), how many relevant images each query has in the gallery. K must
    reach max(ks) and max(r) (or the whole gallery). Returns (Q,) float arrays `recall_at_K`
    for each k, `r_precision` and `map_at_r` (NaN where r == 0)."""
    relevant = np.asarray(relevant, dtype=bool)
    r = np.asarray(r, dtype=np.int64)
    q, width = relevant.shape
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"recall_at_{k}"] = relevant[:, :k].any(axis=1).astype(np.float64)
    rank = np.arange(1, width + 1)
    within_r = rank[None, :] <= r[:, None]
    hits = relevant & within_r
    precision = np.cumsum(hits, axis=1) / rank[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = np.where(r > 0, r, np.nan)
        out["r_precision"] = hits.sum(axis=1) / denom
        out["map_at_r"] = (precision * hits).sum(axis=1) / denom
    return out


def purity_per_class(neighbour_labels: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """For each class, the mean share of its images' neighbours (rows of `neighbour_labels`)
    that carry its label; None for a class with no image."""
    share = (neighbour_labels == labels[:, None]).mean(axis=1)
    totals = np.bincount(labels, minlength=num_classes)
    sums = np.bincount(labels, weights=share, minlength=num_classes)
    return [float(s / t) if t else None for s, t in zip(sums, totals)]


def mislabelled(items: np.ndarray, neighbour_labels: np.ndarray, labels: np.ndarray,
                limit: int = MAX_MISLABELLED) -> list[dict[str, Any]]:
    """Images whose neighbours mostly carry one other label: [{item, label, neighbours_label,
    share}] (share: of their own label), lowest share first."""
    out = []
    k = neighbour_labels.shape[1]
    for row, (item, own) in enumerate(zip(items.tolist(), labels.tolist())):
        votes = np.bincount(neighbour_labels[row])
        share = votes[own] / k if own < len(votes) else 0.0
        other = int(votes.argmax())
        if share <= MISLABELLED_SHARE and other != own and votes[other] > k / 2:
            out.append({"item": int(item), "label": int(own), "neighbours_label": other, "share": float(share)})
    out.sort(key=lambda c: (c["share"], c["item"]))
    return out[:limit]


def retrieval_report(features, labels, *, max_queries: int = MAX_QUERIES, seed: int = 0,
                     chunk_elements: int = 1 << 24) -> dict[str, Any]:
    """Scores of `features` (N, D) torch tensor with `labels` (N,) int: `{"scores": {recall_at_1,
    recall_at_5, recall_at_10, map_at_r}, "r_precision", "purity_at_10", "purity_per_class",
    "mislabelled", "queries", "sampled"}`. Items in `mislabelled` are indices into `features`."""
    import torch
    import torch.nn.functional as F

    n = int(features.shape[0])
    if n < 2:
        return {"scores": {}, "queries": n, "sampled": False}
    device = features.device
    if n > max_queries:
        generator = torch.Generator().manual_seed(seed)
        items = torch.randperm(n, generator=generator)[:max_queries].sort().values
    else:
        items = torch.arange(n)
    x = F.normalize(features[items.to(device)].float(), dim=1)
    y = labels.to(device=device, dtype=torch.int64)[items.to(device)]
    m = int(x.shape[0])
    num_classes = int(y.max()) + 1
    counts = torch.bincount(y, minlength=num_classes)
    r = counts[y] - 1
    width = min(m - 1, max(max(RECALL_KS), int(r.max())))
    chunk = max(1, chunk_elements // max(m, width))
    parts: dict[str, list[np.ndarray]] = {}
    near_labels = []
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        sims = x[start:stop] @ x.T
        sims[torch.arange(stop - start, device=device), torch.arange(start, stop, device=device)] = -float("inf")
        order = sims.topk(width, dim=1).indices
        ranked = y[order]
        relevant = (ranked == y[start:stop, None]).cpu().numpy()
        for name, values in ranked_scores(relevant, r[start:stop].cpu().numpy()).items():
            parts.setdefault(name, []).append(values)
        near_labels.append(ranked[:, :PURITY_K].cpu().numpy())
    per_query = {name: np.concatenate(values) for name, values in parts.items()}
    neighbour_labels = np.concatenate(near_labels)
    y_np = y.cpu().numpy()
    scores = {f"recall_at_{k}": float(per_query[f"recall_at_{k}"].mean()) for k in RECALL_KS}
    with np.errstate(invalid="ignore"):
        scores["map_at_r"] = float(np.nanmean(per_query["map_at_r"])) if np.isfinite(per_query["map_at_r"]).any() else None
        r_precision = float(np.nanmean(per_query["r_precision"])) if np.isfinite(per_query["r_precision"]).any() else None
    return {
        "scores": {k: v for k, v in scores.items() if v is not None},
        "r_precision": r_precision,
        f"purity_at_{PURITY_K}": float((neighbour_labels == y_np[:, None]).mean()),
        "purity_per_class": purity_per_class(neighbour_labels, y_np, num_classes),
        "mislabelled": mislabelled(items.numpy(), neighbour_labels, y_np),
        "queries": m,
        "sampled": m < n,
    }
