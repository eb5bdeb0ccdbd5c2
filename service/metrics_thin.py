"""Long metric series made short enough to plot, without hiding spikes.

The steps after `since` are cut into `max_points // 2` equal step ranges (buckets); from each
bucket the rows holding each metric's smallest and largest value are kept, whole and
unchanged (with their `step`, `attempt`, `epoch`), plus the last row of the series. A loss
spike inside a bucket of a thousand steps is still drawn at its height, and a metric logged
rarely (kNN accuracy at epoch ends) keeps its points. Rows are read in order and in chunks:
memory stays bounded by the bucket count, whatever the series' length.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select

from service.store import JobStore, metrics

CHUNK_ROWS = 5000


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def thin(rows: Iterable[dict], first_step: int, last_step: int, buckets: int) -> list[dict]:
    """`rows` by ascending step, every step in [first_step, last_step]; returns the kept rows by step."""
    span = last_step - first_step + 1
    kept: list[dict] = []
    current = -1
    extremes: dict[str, list] = {}  # metric -> [min value, its row, max value, its row]
    last_row = None

    def flush() -> None:
        chosen = {}
        for low, low_row, high, high_row in extremes.values():
            chosen[low_row["step"]] = low_row
            chosen[high_row["step"]] = high_row
        kept.extend(chosen[step] for step in sorted(chosen))
        extremes.clear()

    for row in rows:
        bucket = (row["step"] - first_step) * buckets // span
        if bucket != current:
            flush()
            current = bucket
        for name, value in row.items():
            if name in ("step", "attempt") or not _numeric(value):
                continue
            seen = extremes.get(name)
            if seen is None:
                extremes[name] = [value, row, value, row]
            elif value < seen[0]:
                seen[0], seen[1] = value, row
            elif value > seen[2]:
                seen[2], seen[3] = value, row
        last_row = row
    flush()
    if last_row is not None and (not kept or kept[-1]["step"] != last_row["step"]):
        kept.append(last_row)
    return kept


def metrics_thinned(store: JobStore, job_id: str, since: int, max_points: int) -> tuple[list[dict], bool]:
    """The rows after `since`, thinned when there are more than `max_points`; (rows, thinned)."""
    where = (metrics.c.job_id == job_id, metrics.c.step > since)
    with store.engine.connect() as conn:
        first, last, count = conn.execute(
            select(func.min(metrics.c.step), func.max(metrics.c.step), func.count()).where(*where)
        ).one()
        if not count or count <= max_points:
            return store.metrics(job_id, since_step=since, limit=max_points), False
        result = conn.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(
            select(metrics.c.step, metrics.c.attempt, metrics.c["values"]).where(*where).order_by(metrics.c.step)
        )
        rows = ({"step": r.step, "attempt": r.attempt, **(r._mapping["values"] or {})} for r in result)
        return thin(rows, int(first), int(last), max(1, max_points // 2)), True
