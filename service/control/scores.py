"""A job's primary score, the one number the jobs list shows and sorts by: an encoder's
(pretrain job's) linear top-1 from its own `evaluate`, else that of its latest linear probe;
a probe's accuracy. `lifecycle` keeps `jobs.score` up to date when a job succeeds or a probe
is deleted; migration 0003 applied the same rules to the jobs before it."""

from __future__ import annotations

from typing import Any


def own_score(job_type: str, result: dict[str, Any] | None) -> float | None:
    """What a succeeded job scored by itself."""
    result = result or {}
    if job_type == "pretrain":
        value = (result.get("scores") or {}).get("linear_top1")
    elif job_type == "linear_probe":
        value = result.get("accuracy")
    else:
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def is_linear_probe(job_type: str, spec: dict[str, Any]) -> bool:
    """A probe whose accuracy stands for its encoder's (logistic regression: a linear probe)."""
    return job_type == "linear_probe" and spec.get("classifier", "logistic") == "logistic"
