"""A job's metric series: read by step, and long series made short enough to plot without
hiding spikes (`MetricsRepo.thinned`). Rows are written by `lifecycle.progress`.

The steps after `since` are cut into `max_points // 2` equal step ranges (buckets); from each
bucket the rows holding each metric's smallest and largest value are kept, whole and
unchanged (with their `step`, `attempt`, `epoch`), plus the last row of the series. A loss
spike inside a bucket of a thousand steps is still drawn at its height, and a metric logged
rarely (kNN accuracy at epoch ends) keeps its points. Rows are read in order and in chunks:
memory stays bounded by the bucket count, whatever the series' length.
"""

from __future__ import annotations

from collections.abc import Iterable
from json import JSONDecoder, loads

from sqlalchemy import Text, bindparam, cast, func, select

from service.control.db import Database
from service.control.tables import metrics

CHUNK_ROWS = 5000
METRICS_SINCE = (
    select(metrics.c.step, metrics.c.attempt, metrics.c["values"])
    .where(metrics.c.job_id == bindparam("job_id"), metrics.c.step > bindparam("since"))
    .order_by(metrics.c.step).limit(bindparam("limit"))
)
_scan = JSONDecoder().scan_once  # the C scanner, without json.loads' whitespace handling around it


def parse(text: str | None) -> dict:
    if not text:
        return {}
    try:
        return _scan(text, 0)[0]
    except StopIteration:  # leading whitespace, or not JSON at all: the full parser says which
        return loads(text)


def thin(rows: Iterable[tuple[int, int, dict]], first_step: int, last_step: int, buckets: int) -> list[dict]:
    """`rows` as (step, attempt, values) by ascending step, every step in [first_step, last_step];
    returns the kept rows, by step, as `{"step", "attempt", **values}`."""
    span = last_step - first_step + 1
    kept: list[dict] = []
    current = -1
    extremes: dict[str, list] = {}  # metric -> [min value, its row, max value, its row]
    last = None

    def flush() -> None:
        chosen = {}
        for _low, low_row, _high, high_row in extremes.values():
            chosen[low_row[0]] = low_row
            chosen[high_row[0]] = high_row
        kept.extend({"step": step, "attempt": attempt, **values}
                    for step, attempt, values in (chosen[k] for k in sorted(chosen)))
        extremes.clear()

    for row in rows:
        bucket = (row[0] - first_step) * buckets // span
        if bucket != current:
            flush()
            current = bucket
        for name, value in row[2].items():
            if type(value) is not float and type(value) is not int:  # numbers only (bool is not int here)
                continue
            seen = extremes.get(name)
            if seen is None:
                extremes[name] = [value, row, value, row]
            elif value < seen[0]:
                seen[0], seen[1] = value, row
            elif value > seen[2]:
                seen[2], seen[3] = value, row
        last = row
    flush()
    if last is not None and (not kept or kept[-1]["step"] != last[0]):
        kept.append({"step": last[0], "attempt": last[1], **last[2]})
    return kept


class MetricsRepo:
    def __init__(self, db: Database):
        self.db = db

    def since(self, job_id: str, since_step: int = 0, limit: int = 10_000) -> list[dict]:
        """Rows with step > since_step, by step: `{"step", "attempt", **values}`."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(METRICS_SINCE, {"job_id": job_id, "since": since_step, "limit": limit}).all()
        return [{"step": r.step, "attempt": r.attempt, **(r._mapping["values"] or {})} for r in rows]

    def thinned(self, job_id: str, since: int, max_points: int) -> tuple[list[dict], bool]:
        """The rows after `since`, thinned when there are more than `max_points`; (rows, thinned)."""
        where = (metrics.c.job_id == job_id, metrics.c.step > since)
        with self.db.engine.connect() as conn:
            first, last, count = conn.execute(
                select(func.min(metrics.c.step), func.max(metrics.c.step), func.count()).where(*where)
            ).one()
            if not count or count <= max_points:
                return self.since(job_id, since_step=since, limit=max_points), False
            # The values as JSON text, parsed here: a third faster than SQLAlchemy's JSON rows.
            result = conn.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(
                select(metrics.c.step, metrics.c.attempt, cast(metrics.c["values"], Text))
                .where(*where).order_by(metrics.c.step)
            )
            rows = ((step, attempt, parse(text)) for step, attempt, text in result)
            return thin(rows, int(first), int(last), max(1, max_points // 2)), True
