"""The job store's state changes as single compare-and-set statements: two processes racing for
one job (a duplicate delivery, a reconciler and a worker) never both win. Private to
`lifecycle`, which adds the checks, the side effects and the errors; no other module writes a
job's `status` (a test checks).

    queued --claim--> running --succeed--> succeeded
       |                 |-----fail------> failed
       |                 '----stopped----> cancelled   (after a cancel request)
       '--cancel------------------------->  cancelled
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, insert, literal, or_, select, update

from service.control.db import json_safe
from service.control.jobs import active_child, active_count
from service.control.models import ACTIVE
from service.control.scores import is_linear_probe, own_score
from service.control.tables import artifacts, job_tags, jobs, metrics

c = jobs.c


def insert_jobs(conn, rows: list[dict], *, owner: str, adds: int, max_active: int | None) -> bool:
    """Insert `rows` (the first one carries the cap check) unless the owner's active jobs plus
    `adds` would pass `max_active`: counted and inserted in one statement, so parallel submits
    cannot both pass a check made before either insert."""
    first, rest = rows[0], rows[1:]
    if max_active is None:
        conn.execute(insert(jobs).values(**first))
    else:
        if conn.dialect.name == "postgresql":  # READ COMMITTED lets two inserts count the same rows
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(owner))))
        values = select(*[literal(v, c[k].type).label(k) for k, v in first.items()]).where(
            active_count(owner).scalar_subquery() + adds <= max_active)
        conn.execute(insert(jobs).from_select(list(first), values))
        # Whether it went in (psycopg may answer rowcount -1 to this INSERT ... SELECT).
        if conn.execute(select(c.id).where(c.id == first["id"])).first() is None:
            return False
    if rest:
        conn.execute(insert(jobs), rest)
    return True


def claim(conn, job_id: str, worker: str, now: datetime, lease_s: float, dead_holder: str | None) -> bool:
    taken_over = [and_(c.status == "running", c.worker == dead_holder)] if dead_holder else []
    return bool(conn.execute(
        update(jobs).where(
            c.id == job_id, c.cancel_requested.is_(False),
            or_(c.status == "queued", and_(c.status == "running", c.lease_expires_at < now), *taken_over))
        .values(status="running", worker=worker, attempts=c.attempts + 1,
                lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now,
                started_at=func.coalesce(c.started_at, now), error=None)
    ).rowcount)


def _held(job_id: str, worker: str) -> list:
    return [c.id == job_id, c.worker == worker, c.status == "running"]


def extend_lease(conn, job_id: str, worker: str, now: datetime, lease_s: float) -> bool:
    return bool(conn.execute(update(jobs).where(*_held(job_id, worker)).values(
        lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now)).rowcount)


def record_progress(conn, upsert, job_id: str, worker: str, step: int, total_steps: int | None,
                    epoch: float | None, rows: list[dict]) -> bool:
    """Progress and metrics rows (`{"step": int, name: value}`), upserted by (job, step): a resumed
    job rewriting steps it reported before replaces them, never duplicates them."""
    attempt = conn.execute(
        update(jobs).where(*_held(job_id, worker))
        .values(step=step, **{k: v for k, v in (("total_steps", total_steps), ("epoch", epoch)) if v is not None})
        .returning(c.attempts)
    ).scalar()
    if attempt is None:
        return False
    if rows:
        values = [{"job_id": job_id, "step": int(r.pop("step")), "attempt": attempt, "values": r} for r in rows]
        stmt = upsert(metrics).values(values)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["job_id", "step"], set_={"values": stmt.excluded["values"], "attempt": stmt.excluded.attempt}))
        latest = max(values, key=lambda v: v["step"])
        conn.execute(update(jobs).where(c.id == job_id)
                     .values(latest_metrics={"step": latest["step"], **latest["values"]}))
    return True


def succeed(conn, job_id: str, worker: str, result: dict, now: datetime) -> bool:
    """-> succeeded with `result`; its primary score recorded, and its encoder's when it is a linear probe."""
    row = conn.execute(update(jobs).where(*_held(job_id, worker)).values(
        status="succeeded", result=json_safe(result), finished_at=now, lease_expires_at=None)
        .returning(c.type, c.spec, c.encoder_job)).first()
    if row is None:
        return False
    score = own_score(row.type, result)
    if score is not None:
        conn.execute(update(jobs).where(c.id == job_id).values(score=json_safe(score)))
    if row.encoder_job and is_linear_probe(row.type, row.spec or {}):
        refresh_encoder_score(conn, row.encoder_job)
    return True


def refresh_encoder_score(conn, encoder_id: str) -> None:
    """An encoder's primary score: its own evaluate's linear top-1, else its latest linear probe's."""
    row = conn.execute(select(c.type, c.result).where(c.id == encoder_id)).first()
    if row is None or row.type != "pretrain":
        return
    score = own_score(row.type, row.result)
    if score is None:
        probes = conn.execute(select(c.type, c.spec, c.score).where(
            c.encoder_job == encoder_id, c.type == "linear_probe", c.status == "succeeded", c.score.is_not(None))
            .order_by(c.finished_at.desc(), c.id.desc()))
        score = next((p.score for p in probes if is_linear_probe(p.type, p.spec or {})), None)
    conn.execute(update(jobs).where(c.id == encoder_id).values(score=score))


def label(conn, job_id: str, owner: str | None, changes: dict, add: list[str], remove: list[str],
          max_tags: int) -> list[str] | None:
    """Set a job's name/notes (`changes`) and tags (`changes["tags"]` replaces them; then `add`,
    `remove`); the tags it ends with, None when the job is not there (or not `owner`'s). Raises
    ValueError, writing nothing, when it would end with more than `max_tags`."""
    where = [c.id == job_id] + ([c.owner == owner] if owner is not None else [])
    fields = {k: v for k, v in changes.items() if k in ("name", "notes")}
    # The row is written first, even when only tags change: that takes its lock (PostgreSQL) or
    # the database's write lock (SQLite) before the tags are read, so two edits cannot interleave.
    if not conn.execute(update(jobs).where(*where).values(**(fields or {"id": c.id}))).rowcount:
        return None
    current = [r.tag for r in conn.execute(select(job_tags.c.tag).where(job_tags.c.job_id == job_id))]
    tags = list(changes["tags"]) if "tags" in changes else current
    tags = [t for t in dict.fromkeys(tags + list(add)) if t not in set(remove)]
    if len(tags) > max_tags:
        raise ValueError(f"the job would have {len(tags)} tags, more than the {max_tags} allowed; remove some")
    if set(tags) != set(current):
        set_tags(conn, job_id, tags)
    return sorted(tags)


def set_tags(conn, job_id: str, tags: list[str]) -> None:
    conn.execute(delete(job_tags).where(job_tags.c.job_id == job_id))
    if tags:
        conn.execute(insert(job_tags), [{"job_id": job_id, "tag": t} for t in dict.fromkeys(tags)])


def _active_or_held(job_id: str, worker: str | None) -> list:
    """`worker=None`: whoever holds it (the reconciler, which knows its holder is gone)."""
    return [c.id == job_id, c.status.in_(ACTIVE)] if worker is None else _held(job_id, worker)


def fail(conn, job_id: str, worker: str | None, message: str, now: datetime) -> bool:
    return bool(conn.execute(update(jobs).where(*_active_or_held(job_id, worker)).values(
        status="failed", error=message, finished_at=now, lease_expires_at=None)).rowcount)


def stopped(conn, job_id: str, worker: str | None, now: datetime) -> bool:
    """running -> cancelled: the job stopped after a cancel request."""
    return bool(conn.execute(update(jobs).where(*_active_or_held(job_id, worker)).values(
        status="cancelled", finished_at=now, lease_expires_at=None)).rowcount)


def cancel(conn, job_id: str, now: datetime) -> list[str]:
    """A queued job (and a parent's queued children) is cancelled at once; a running one gets
    `cancel_requested`, and its worker stops at its next check. Returns the ids cancelled now."""
    cancelled: list[str] = []
    for where in ([c.parent_id == job_id], [c.id == job_id]):
        cancelled += conn.execute(update(jobs).where(*where, c.status == "queued")
                                  .values(status="cancelled", cancel_requested=True, finished_at=now)
                                  .returning(c.id)).scalars().all()
        conn.execute(update(jobs).where(*where, c.status == "running").values(cancel_requested=True))
    return cancelled


def release(conn, job_id: str, worker: str, now: datetime) -> bool:
    """running -> queued by the worker that claimed it and could not start it: its attempt not counted.
    Not once a cancel was requested (the job is then stopped instead)."""
    return bool(conn.execute(update(jobs).where(*_held(job_id, worker), c.cancel_requested.is_(False)).values(
        status="queued", worker=None, lease_expires_at=None, enqueued_at=now, attempts=c.attempts - 1)).rowcount)


def expire_lease(conn, job_id: str, worker: str, now: datetime) -> bool:
    return bool(conn.execute(update(jobs).where(*_held(job_id, worker)).values(
        lease_expires_at=now - timedelta(seconds=1))).rowcount)


def requeue(conn, job_id: str, now: datetime) -> bool:
    """A running job whose lease expired goes back to queued (its worker is gone)."""
    return bool(conn.execute(update(jobs).where(c.id == job_id, c.status == "running", c.lease_expires_at < now)
                             .values(status="queued", worker=None, lease_expires_at=None, enqueued_at=now)).rowcount)


def mark_enqueued(conn, job_id: str, now: datetime) -> None:
    conn.execute(update(jobs).where(c.id == job_id).values(enqueued_at=now))


def retry(conn, job_id: str, now: datetime) -> tuple[bool, str | None]:
    """failed/cancelled -> queued, its parent (if any) back to running; (done, parent id)."""
    row = conn.execute(
        update(jobs).where(c.id == job_id, c.status.in_(("failed", "cancelled")))
        .values(status="queued", cancel_requested=False, error=None, finished_at=None, worker=None,
                lease_expires_at=None, enqueued_at=now, result=None)
        .returning(c.parent_id)
    ).first()
    if row is None:
        return False, None
    if row[0] is not None:
        conn.execute(update(jobs).where(c.id == row[0])
                     .values(status="running", cancel_requested=False, finished_at=None, error=None))
    return True, row[0]


def settle_parent(conn, parent_id: str, status: str, result: dict, now: datetime) -> bool:
    """running -> `status` with the children's table, once, and only while none of its children
    is queued or running (a child retried since the table was made: the next settle remakes it)."""
    return bool(conn.execute(
        update(jobs).where(c.id == parent_id, c.status == "running", ~active_child())
        .values(status=status, result=json_safe(result), finished_at=now, error=None)).rowcount)


def delete_finished(conn, job_id: str, owner: str | None) -> list[str] | None:
    """Delete a finished job with its children, their metrics and artifact records; the ids
    deleted, or None when it (or a child) is still active or is not there."""
    owned = [c.id == job_id] + ([c.owner == owner] if owner is not None else [])
    ids = [r.id for r in conn.execute(select(c.id).where(or_(and_(*owned), c.parent_id == job_id))).all()]
    if job_id not in ids:
        return None
    if conn.execute(select(func.count()).select_from(jobs).where(c.id.in_(ids), c.status.in_(ACTIVE))).scalar_one():
        return None
    encoders = {r.encoder_job for r in conn.execute(select(c.type, c.spec, c.encoder_job).where(
        c.id.in_(ids), c.type == "linear_probe", c.encoder_job.is_not(None))) if is_linear_probe(r.type, r.spec or {})}
    conn.execute(delete(metrics).where(metrics.c.job_id.in_(ids)))
    conn.execute(delete(artifacts).where(artifacts.c.job_id.in_(ids)))
    conn.execute(delete(job_tags).where(job_tags.c.job_id.in_(ids)))
    conn.execute(delete(jobs).where(c.id.in_(ids)))
    for encoder in encoders - set(ids):  # the score a deleted probe gave its encoder goes with it
        refresh_encoder_score(conn, encoder)
    return ids
