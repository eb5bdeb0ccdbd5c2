"""The job store: the source of truth for jobs, their metrics, datasets and artifacts.

SQLAlchemy Core on SQLite (WAL) or PostgreSQL; no FastAPI import, so the worker uses it too.
State changes are single compare-and-set UPDATEs, so two processes racing for one job
(a duplicate delivery, a reconciler and a worker) never both win:

    queued --claim--> running --finish--> succeeded
       |                 |----fail------> failed
       |                 '--mark_cancelled-> cancelled   (after cancel_requested)
       '--cancel-----------------------------> cancelled

A running job whose lease expired (its worker stopped heart-beating) can be claimed again;
`attempts` counts the claims.
"""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.types import TypeDecorator

ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ACTIVE + TERMINAL


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Stored as naive UTC (the same on SQLite and PostgreSQL), returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None else None


metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False, index=True),
    Column("type", String(32), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("spec", JSON, nullable=False),
    Column("queue", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("enqueued_at", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("worker", String(255), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("step", Integer, nullable=False, default=0),
    Column("total_steps", Integer, nullable=True),
    Column("epoch", Float, nullable=True),
    Column("latest_metrics", JSON, nullable=True),
    Column("result", JSON, nullable=True),
    Column("error", Text, nullable=True),
)

metrics = Table(
    "metrics",
    metadata,
    Column("job_id", String(64), nullable=False, index=True),
    Column("step", Integer, nullable=False),
    Column("attempt", Integer, nullable=False, default=1),
    Column("values", JSON, nullable=False),
    UniqueConstraint("job_id", "step", name="uq_metrics_job_step"),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("summary", JSON, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("job_id", String(64), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),
)

workers = Table(
    "workers",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("info", JSON, nullable=True),
    Column("seen_at", UTCDateTime, nullable=False),
)


# The reads behind status and metrics polls, built once: composing a select and its cache
# key on every call costs more than SQLite takes to answer it.
JOB_BY_ID = select(jobs).where(jobs.c.id == bindparam("job_id"))
JOB_BY_ID_AND_OWNER = JOB_BY_ID.where(jobs.c.owner == bindparam("owner"))
JOB_ID_OF_OWNER = select(jobs.c.id).where(jobs.c.id == bindparam("job_id"), jobs.c.owner == bindparam("owner"))
METRICS_SINCE = (
    select(metrics.c.step, metrics.c.attempt, metrics.c["values"])
    .where(metrics.c.job_id == bindparam("job_id"), metrics.c.step > bindparam("since"))
    .order_by(metrics.c.step).limit(bindparam("limit"))
)


def json_safe(value: Any) -> Any:
    """NaN and infinities become None: they are not JSON (PostgreSQL refuses them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _dialect_insert(engine: Engine):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert


class JobStore:
    """Jobs, metrics, datasets, artifacts and worker sightings in one SQL database.

    `schema` (PostgreSQL only) keeps the tables in their own schema: tests sharing one
    database use a schema each.
    """

    def __init__(self, database_url: str, *, schema: str | None = None, create: bool = True):
        self.database_url = database_url
        if database_url.startswith("sqlite"):
            engine = create_engine(
                database_url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=20,
                max_overflow=20,
            )
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(database_url, pool_pre_ping=True, pool_size=20, max_overflow=20)
        self.schema = schema
        if schema is not None:
            if engine.dialect.name != "postgresql":
                raise ValueError("schema= is for PostgreSQL only")
            with engine.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            engine = engine.execution_options(schema_translate_map={None: schema})
        self.engine = engine
        self._insert = _dialect_insert(engine)
        if create:
            self.create_tables()

    def create_tables(self) -> None:
        try:
            metadata.create_all(self.engine)
        except (OperationalError, ProgrammingError, IntegrityError):
            # Another process (the API, a worker) created them at the same moment.
            metadata.create_all(self.engine)

    def drop(self) -> None:
        """Drop the tables (or the whole schema); for tests."""
        if self.schema is not None:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        else:
            metadata.drop_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    # ---- jobs -------------------------------------------------------------------------

    def create_job(
        self, owner: str, type: str, spec: dict, *, queue: str | None = None,
        max_active: int | None = None, adds: int = 1,
    ) -> dict | None:
        """Record a queued job. With `max_active`, only if the owner's active jobs plus the
        `adds` this request makes stay within it (None otherwise): counted and inserted in one
        statement, so parallel submits cannot both pass a check made before either insert."""
        now = utcnow()
        row = dict(
            id=new_id("job"), owner=owner, type=type, status="queued", spec=spec, queue=queue,
            created_at=now, enqueued_at=now, attempts=0, cancel_requested=False, step=0,
        )
        with self.engine.begin() as conn:
            if max_active is None:
                conn.execute(insert(jobs).values(**row))
            else:
                if self.engine.dialect.name == "postgresql":
                    # READ COMMITTED lets two inserts count the same rows: take turns per owner.
                    conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(owner))))
                values = select(*[literal(v, jobs.c[k].type).label(k) for k, v in row.items()]).where(
                    self._active_count(owner).scalar_subquery() + adds <= max_active
                )
                if not conn.execute(insert(jobs).from_select(list(row), values)).rowcount:
                    return None
        return self.get_job(row["id"])  # type: ignore[return-value]

    def get_job(self, job_id: str, owner: str | None = None) -> dict | None:
        query, params = (JOB_BY_ID, {"job_id": job_id}) if owner is None else \
            (JOB_BY_ID_AND_OWNER, {"job_id": job_id, "owner": owner})
        with self.engine.connect() as conn:
            row = conn.execute(query, params).mappings().first()
        return dict(row) if row is not None else None

    def owns_job(self, job_id: str, owner: str) -> bool:
        """Whether the job exists and is `owner`'s; reads the id only (no JSON to decode)."""
        with self.engine.connect() as conn:
            return conn.execute(JOB_ID_OF_OWNER, {"job_id": job_id, "owner": owner}).first() is not None

    def list_jobs(
        self,
        owner: str | None,
        status: str | None = None,
        type: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict], int]:
        where = []
        if owner is not None:
            where.append(jobs.c.owner == owner)
        if status is not None:
            where.append(jobs.c.status == status)
        if type is not None:
            where.append(jobs.c.type == type)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(jobs).where(*where)).scalar_one()
            rows = conn.execute(
                select(jobs).where(*where).order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
                .limit(limit).offset(offset)
            ).mappings().all()
        return [dict(r) for r in rows], int(total)

    def count_jobs_by_status(self, owner: str | None = None) -> dict[str, int]:
        where = [jobs.c.owner == owner] if owner is not None else []
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.status, func.count()).where(*where).group_by(jobs.c.status)).all()
        counts = {status: 0 for status in STATUSES}
        counts.update({status: int(n) for status, n in rows})
        return counts

    def job_durations(self, limit: int = 10_000, owner: str | None = None) -> list[tuple[str, str, float]]:
        """(type, status, seconds from start to end) of the most recently finished jobs."""
        where = [jobs.c.owner == owner] if owner is not None else []
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.type, jobs.c.status, jobs.c.started_at, jobs.c.finished_at)
                .where(jobs.c.started_at.is_not(None), jobs.c.finished_at.is_not(None), *where)
                .order_by(jobs.c.finished_at.desc()).limit(limit)
            ).all()
        return [(r.type, r.status, max(0.0, (r.finished_at - r.started_at).total_seconds())) for r in rows]

    @staticmethod
    def _active_count(owner: str):
        """The query behind the per-key cap: the owner's queued and running jobs."""
        return select(func.count()).select_from(jobs).where(jobs.c.owner == owner, jobs.c.status.in_(ACTIVE))

    def count_active(self, owner: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(self._active_count(owner)).scalar_one())

    def claim(self, job_id: str, worker: str, lease_s: float, dead_holder: str | None = None) -> dict | None:
        """Take the job for `worker`: one compare-and-set. None when someone else holds it,
        it is finished or cancelled, or a cancel was requested. `dead_holder`: a holder the
        caller knows is dead (a killed sibling process), whose lease is taken over at once."""
        now = utcnow()
        taken_over = [and_(jobs.c.status == "running", jobs.c.worker == dead_holder)] if dead_holder else []
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.cancel_requested.is_(False),
                    or_(
                        jobs.c.status == "queued",
                        and_(jobs.c.status == "running", jobs.c.lease_expires_at < now),
                        *taken_over,
                    ),
                )
                .values(
                    status="running", worker=worker, attempts=jobs.c.attempts + 1,
                    lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now,
                    started_at=func.coalesce(jobs.c.started_at, now), error=None,
                )
            ).rowcount
            if claimed:
                self._seen(conn, worker, now, {"job": job_id})
        return self.get_job(job_id) if claimed else None

    def heartbeat(self, job_id: str, worker: str, lease_s: float) -> bool:
        """Extend the lease; False when this worker no longer holds the job."""
        now = utcnow()
        with self.engine.begin() as conn:
            held = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.worker == worker, jobs.c.status == "running")
                .values(lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now)
            ).rowcount
            self._seen(conn, worker, now, {"job": job_id if held else None})
        return bool(held)

    def report(
        self,
        job_id: str,
        worker: str,
        step: int,
        total_steps: int | None = None,
        epoch: float | None = None,
        metrics_rows: Iterable[dict] = (),
    ) -> bool:
        """Record progress and metrics rows (`{"step": int, name: value, ...}`).

        Rows are upserted by (job, step): a resumed job rewriting steps it had reported
        before replaces them, never duplicates them. `total_steps`/`epoch` left None keep
        their last value. False when the worker lost the job.
        """
        rows = [json_safe(dict(r)) for r in metrics_rows]
        with self.engine.begin() as conn:
            attempt = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.worker == worker, jobs.c.status == "running")
                .values(step=step, **{k: v for k, v in (("total_steps", total_steps), ("epoch", epoch))
                                      if v is not None})
                .returning(jobs.c.attempts)
            ).scalar()
            if attempt is None:
                return False
            if rows:
                values = [
                    {"job_id": job_id, "step": int(r.pop("step")), "attempt": attempt, "values": r}
                    for r in rows
                ]
                stmt = self._insert(metrics).values(values)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["job_id", "step"],
                    set_={"values": stmt.excluded["values"], "attempt": stmt.excluded.attempt},
                ))
                latest = max(values, key=lambda v: v["step"])
                conn.execute(
                    update(jobs).where(jobs.c.id == job_id)
                    .values(latest_metrics={"step": latest["step"], **latest["values"]})
                )
        return True

    def finish(
        self, job_id: str, worker: str, result: dict, artifacts_: Iterable[tuple[str, int, str]] = ()
    ) -> bool:
        """running -> succeeded with the result and the artifact list. False when not held."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.worker == worker, jobs.c.status == "running")
                .values(status="succeeded", result=json_safe(result), finished_at=utcnow(), lease_expires_at=None)
            ).rowcount
            if done:
                self._put_artifacts(conn, job_id, artifacts_)
        return bool(done)

    def fail(
        self, job_id: str, worker: str | None, message: str, artifacts_: Iterable[tuple[str, int, str]] = ()
    ) -> bool:
        """-> failed with `message` (and what it leaves, e.g. its last checkpoint). `worker=None`
        (the reconciler) fails it whoever holds it."""
        where = [jobs.c.id == job_id, jobs.c.status.in_(ACTIVE)]
        if worker is not None:
            where += [jobs.c.worker == worker, jobs.c.status == "running"]
        with self.engine.begin() as conn:
            done = conn.execute(
                update(jobs).where(*where)
                .values(status="failed", error=message, finished_at=utcnow(), lease_expires_at=None)
            ).rowcount
            if done:
                self._put_artifacts(conn, job_id, artifacts_)
        return bool(done)

    def cancel(self, job_id: str, owner: str | None = None) -> dict | None:
        """A queued job is cancelled at once; a running one gets `cancel_requested` and its
        worker stops at the next check. Finished jobs are left as they are."""
        owned = [jobs.c.id == job_id] + ([jobs.c.owner == owner] if owner is not None else [])
        with self.engine.begin() as conn:
            done = conn.execute(
                update(jobs).where(*owned, jobs.c.status == "queued")
                .values(status="cancelled", cancel_requested=True, finished_at=utcnow())
            ).rowcount
            if not done:
                conn.execute(
                    update(jobs).where(*owned, jobs.c.status == "running").values(cancel_requested=True)
                )
        return self.get_job(job_id, owner)

    def is_cancel_requested(self, job_id: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(jobs.c.cancel_requested, jobs.c.status).where(jobs.c.id == job_id)
            ).first()
        return row is None or bool(row.cancel_requested) or row.status == "cancelled"

    def mark_cancelled(
        self, job_id: str, worker: str | None, artifacts_: Iterable[tuple[str, int, str]] = ()
    ) -> bool:
        """running -> cancelled (the worker stopped after a cancel request), with what the job
        leaves (its last checkpoint) listed in the same transaction."""
        where = [jobs.c.id == job_id, jobs.c.status.in_(ACTIVE)]
        if worker is not None:
            where.append(jobs.c.worker == worker)
        with self.engine.begin() as conn:
            done = conn.execute(
                update(jobs).where(*where)
                .values(status="cancelled", finished_at=utcnow(), lease_expires_at=None)
            ).rowcount
            if done:
                self._put_artifacts(conn, job_id, artifacts_)
        return bool(done)

    def mark_enqueued(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(enqueued_at=utcnow()))

    def release(self, job_id: str, worker: str) -> bool:
        """running -> queued by the worker that claimed it and could not start it (no room on
        its GPU): the claim is undone, its attempt not counted."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.worker == worker, jobs.c.status == "running")
                .values(status="queued", worker=None, lease_expires_at=None, enqueued_at=utcnow(),
                        attempts=jobs.c.attempts - 1)
            ).rowcount
        return bool(done)

    def running_held_by(self, prefix: str) -> list[dict]:
        """Running jobs whose holder's name starts with `prefix` (`NODE/`: one worker's processes)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.worker)
                .where(jobs.c.status == "running", jobs.c.worker.startswith(prefix, autoescape=True))
            ).mappings().all()
        return [dict(r) for r in rows]

    def expire_lease(self, job_id: str, worker: str) -> bool:
        """End `worker`'s lease now (it is known dead), so the job can be requeued or claimed at once."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.worker == worker, jobs.c.status == "running")
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            ).rowcount
        return bool(done)

    def requeue(self, job_id: str) -> bool:
        """A running job whose lease expired goes back to queued (its worker is gone)."""
        now = utcnow()
        with self.engine.begin() as conn:
            done = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == "running", jobs.c.lease_expires_at < now)
                .values(status="queued", worker=None, lease_expires_at=None, enqueued_at=now)
            ).rowcount
        return bool(done)

    def stale_jobs(self, now: datetime | None = None, queued_older_than_s: float = 300.0) -> list[dict]:
        """For the reconciler: queued jobs whose message was sent longer ago than
        `queued_older_than_s` (it may be lost), and running jobs whose lease expired."""
        now = now or utcnow()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs).where(or_(
                    and_(
                        jobs.c.status == "queued",
                        jobs.c.enqueued_at < now - timedelta(seconds=queued_older_than_s),
                    ),
                    and_(jobs.c.status == "running", jobs.c.lease_expires_at < now),
                )).order_by(jobs.c.created_at)
            ).mappings().all()
        return [dict(r) for r in rows]

    # ---- metrics ----------------------------------------------------------------------

    def metrics(self, job_id: str, since_step: int = 0, limit: int = 10_000) -> list[dict]:
        """Rows with step > since_step, by step: `{"step", "attempt", **values}`."""
        with self.engine.connect() as conn:
            rows = conn.execute(METRICS_SINCE, {"job_id": job_id, "since": since_step, "limit": limit}).all()
        return [{"step": r.step, "attempt": r.attempt, **(r._mapping["values"] or {})} for r in rows]

    # ---- artifacts --------------------------------------------------------------------

    def add_artifact(self, job_id: str, name: str, size: int, sha256: str) -> None:
        """Register (or replace) one artifact, e.g. a checkpoint while the job runs."""
        with self.engine.begin() as conn:
            self._put_artifacts(conn, job_id, [(name, size, sha256)])

    def _put_artifacts(self, conn, job_id: str, items: Iterable[tuple[str, int, str]]) -> None:
        values = [
            {"job_id": job_id, "name": name, "size": int(size), "sha256": sha, "created_at": utcnow()}
            for name, size, sha in items
        ]
        if values:
            stmt = self._insert(artifacts).values(values)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["job_id", "name"],
                set_={"size": stmt.excluded.size, "sha256": stmt.excluded.sha256,
                      "created_at": stmt.excluded.created_at},
            ))

    def artifacts(self, job_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(artifacts.c.name, artifacts.c.size, artifacts.c.sha256, artifacts.c.created_at)
                .where(artifacts.c.job_id == job_id).order_by(artifacts.c.name)
            ).mappings().all()
        return [dict(r) for r in rows]

    def get_artifact(self, job_id: str, name: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(artifacts.c.name, artifacts.c.size, artifacts.c.sha256, artifacts.c.created_at)
                .where(artifacts.c.job_id == job_id, artifacts.c.name == name)
            ).mappings().first()
        return dict(row) if row is not None else None

    # ---- datasets ---------------------------------------------------------------------

    def create_dataset(
        self, owner: str, name: str, summary: dict, bytes: int, *, id: str | None = None
    ) -> dict:
        row = dict(id=id or new_id("ds"), owner=owner, name=name, summary=summary, bytes=int(bytes),
                   created_at=utcnow())
        with self.engine.begin() as conn:
            conn.execute(insert(datasets).values(**row))
        return row

    def get_dataset(self, dataset_id: str, owner: str | None = None) -> dict | None:
        query = select(datasets).where(datasets.c.id == dataset_id)
        if owner is not None:
            query = query.where(datasets.c.owner == owner)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row is not None else None

    def list_datasets(self, owner: str | None, limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
        where = [datasets.c.owner == owner] if owner is not None else []
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(datasets).where(*where)).scalar_one()
            rows = conn.execute(
                select(datasets).where(*where).order_by(datasets.c.created_at.desc())
                .limit(limit).offset(offset)
            ).mappings().all()
        return [dict(r) for r in rows], int(total)

    def delete_dataset(self, dataset_id: str, owner: str | None = None) -> bool:
        where = [datasets.c.id == dataset_id] + ([datasets.c.owner == owner] if owner is not None else [])
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(datasets).where(*where)).rowcount)

    def stored_bytes(self, owner: str) -> int:
        """Bytes a key stores: its datasets and its jobs' artifacts."""
        with self.engine.connect() as conn:
            ds = conn.execute(
                select(func.coalesce(func.sum(datasets.c.bytes), 0)).where(datasets.c.owner == owner)
            ).scalar_one()
            arts = conn.execute(
                select(func.coalesce(func.sum(artifacts.c.size), 0))
                .select_from(artifacts.join(jobs, jobs.c.id == artifacts.c.job_id))
                .where(jobs.c.owner == owner)
            ).scalar_one()
        return int(ds) + int(arts)

    # ---- workers ----------------------------------------------------------------------

    def worker_seen(self, name: str, info: dict | None = None) -> None:
        """A worker says it is alive (also implied by claim and heartbeat)."""
        with self.engine.begin() as conn:
            self._seen(conn, name, utcnow(), info or {})

    def _seen(self, conn, name: str, now: datetime, info: dict) -> None:
        stmt = self._insert(workers).values(name=name, info=info, seen_at=now)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["name"], set_={"info": stmt.excluded.info, "seen_at": stmt.excluded.seen_at}
        ))

    def workers_seen(self, within_s: float) -> list[dict]:
        since = utcnow() - timedelta(seconds=within_s)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(workers).where(workers.c.seen_at >= since).order_by(workers.c.name)
            ).mappings().all()
        return [dict(r) for r in rows]


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
