"""Reading jobs: one job, a page of them, a parent's children and their progress, the counts
behind caps and metrics. Writes are `lifecycle`'s (through `transitions`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, case, func, or_, select

from service.control.clock import Clock, SYSTEM
from service.control.db import Database
from service.control.models import ACTIVE, PARENT_TYPES, STATUSES, TERMINAL, ChildSummary, Job
from service.control.tables import job_tags, jobs

SORTS = {
    "created": (jobs.c.created_at, jobs.c.id),
    "-created": (jobs.c.created_at.desc(), jobs.c.id.desc()),
    # Jobs without a score come last either way.
    "score": (jobs.c.score.is_(None), jobs.c.score, jobs.c.created_at.desc(), jobs.c.id.desc()),
    "-score": (jobs.c.score.is_(None), jobs.c.score.desc(), jobs.c.created_at.desc(), jobs.c.id.desc()),
}
DATASET_FIELDS = (("config", "dataset", "source"), ("train", "source"), ("test", "source"), ("data", "source"))
"""Where a job's spec names its data (pretrain and sweep, a probe's two splits, embed)."""

TAGS = select(func.aggregate_strings(job_tags.c.tag, ",")).where(
    job_tags.c.job_id == jobs.c.id).scalar_subquery().label("tags")
JOBS = select(jobs, TAGS)
"""Every read of whole jobs: the row and its tags (aggregated, one string)."""

# The reads behind status polls, built once: composing a select and its cache key on every
# call costs more than SQLite takes to answer it.
JOB_BY_ID = JOBS.where(jobs.c.id == bindparam("job_id"))
JOB_BY_ID_AND_OWNER = JOB_BY_ID.where(jobs.c.owner == bindparam("owner"))
JOB_ID_OF_OWNER = select(jobs.c.id).where(jobs.c.id == bindparam("job_id"), jobs.c.owner == bindparam("owner"))


def active_child():
    """EXISTS: the outer `jobs` row has a queued or running child."""
    child = jobs.alias("child")
    return select(child.c.id).where(child.c.parent_id == jobs.c.id, child.c.status.in_(ACTIVE)).exists()


def active_count(owner: str):
    """The query behind the per-key cap: the owner's queued and running jobs that run on a
    worker (a sweep's children count, the sweep itself does not)."""
    return select(func.count()).select_from(jobs).where(
        jobs.c.owner == owner, jobs.c.status.in_(ACTIVE), jobs.c.type.not_in(PARENT_TYPES))


class JobRepo:
    def __init__(self, db: Database, clock: Clock = SYSTEM):
        self.db = db
        self.clock = clock

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        query, params = (JOB_BY_ID, {"job_id": job_id}) if owner is None else \
            (JOB_BY_ID_AND_OWNER, {"job_id": job_id, "owner": owner})
        with self.db.engine.connect() as conn:
            row = conn.execute(query, params).mappings().first()
        return Job.from_row(row) if row is not None else None

    def owns(self, job_id: str, owner: str) -> bool:
        """Whether the job exists and is `owner`'s; reads the id only (no JSON to decode)."""
        with self.db.engine.connect() as conn:
            return conn.execute(JOB_ID_OF_OWNER, {"job_id": job_id, "owner": owner}).first() is not None

    def list(self, owner: str | None, *, status: str | None = None, type: str | None = None,
             parent: str | None = None, tags: Sequence[str] = (), q: str | None = None,
             method: str | None = None, encoder: str | None = None, dataset: str | None = None,
             sort: str = "-created", limit: int = 50, offset: int = 0, top_level: bool = False,
             ) -> tuple[list[Job], int]:
        """A page of jobs in `sort` order (SORTS; newest first by default), and how many match.
        `tags`: all of them; `q`: in the name, any case; `encoder`: the architecture (config.encoder)
        or the encoder job a probe or embed scores; `dataset`: a source (`dataset:ID`, or just the ID);
        `top_level`: no sweep members."""
        where = [] if parent is None else [jobs.c.parent_id == parent]
        if top_level:
            where.append(jobs.c.parent_id.is_(None))
        if owner is not None:
            where.append(jobs.c.owner == owner)
        if status is not None:
            where.append(jobs.c.status == status)
        if type is not None:
            where.append(jobs.c.type == type)
        if tags:
            wanted = set(tags)
            where.append(jobs.c.id.in_(select(job_tags.c.job_id).where(job_tags.c.tag.in_(wanted))
                                       .group_by(job_tags.c.job_id).having(func.count() == len(wanted))))
        if q:
            where.append(func.lower(jobs.c.name).contains(q.lower(), autoescape=True))
        if method is not None:
            where.append(jobs.c.spec[("config", "method")].as_string() == method)
        if encoder is not None:
            where.append(or_(jobs.c.spec[("config", "encoder")].as_string() == encoder, jobs.c.encoder_job == encoder))
        if dataset is not None:
            source = dataset if ":" in dataset else f"dataset:{dataset}"
            where.append(or_(*(jobs.c.spec[path].as_string() == source for path in DATASET_FIELDS)))
        with self.db.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(jobs).where(*where)).scalar_one()
            # The page's ids first, then their rows: sorting ids alone is what makes a late page cheap
            # (sorting whole rows, specs and tags and all, costs 25 times as much at offset 10,000).
            page = select(jobs.c.id).where(*where).order_by(*SORTS[sort]).limit(limit).offset(offset)
            rows = conn.execute(JOBS.where(jobs.c.id.in_(page)).order_by(*SORTS[sort])).mappings().all()
        return [Job.from_row(r) for r in rows], int(total)

    def evaluations(self, encoder_id: str, owner: str | None = None, limit: int = 100) -> list[Job]:
        """The probe and embed jobs that name `encoder_id` as their encoder, newest first."""
        where = [jobs.c.encoder_job == encoder_id] + ([jobs.c.owner == owner] if owner is not None else [])
        with self.db.engine.connect() as conn:
            rows = conn.execute(JOBS.where(*where).order_by(*SORTS["-created"]).limit(limit)).mappings().all()
        return [Job.from_row(r) for r in rows]

    def children(self, parent_id: str) -> list[Job]:
        """A parent's children, in the order they were made."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                JOBS.where(jobs.c.parent_id == parent_id).order_by(jobs.c.created_at, jobs.c.id)
            ).mappings().all()
        return [Job.from_row(r) for r in rows]

    def children_summary(self, parent_ids: list[str]) -> dict[str, ChildSummary]:
        """Each parent's children by status, summed steps, and fraction done (a final child
        counts as done, a queued one as 0)."""
        if not parent_ids:
            return {}
        done = case((jobs.c.status.in_(TERMINAL), 1.0),
                    (jobs.c.total_steps > 0, jobs.c.step * 1.0 / jobs.c.total_steps), else_=0.0)
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.parent_id, jobs.c.status, func.count(), func.sum(jobs.c.step),
                       func.sum(jobs.c.total_steps), func.count(jobs.c.total_steps), func.sum(done))
                .where(jobs.c.parent_id.in_(parent_ids)).group_by(jobs.c.parent_id, jobs.c.status)
            ).all()
        out = {pid: ChildSummary() for pid in parent_ids}
        known = dict.fromkeys(parent_ids, 0)
        done_sum = dict.fromkeys(parent_ids, 0.0)
        for pid, status, n, steps, totals, n_known, finished in rows:
            entry = out[pid]
            entry.counts[status] = int(n)
            entry.counts["total"] += int(n)
            entry.step += int(steps or 0)
            entry.total_steps += int(totals or 0)
            known[pid] += int(n_known)
            done_sum[pid] += float(finished or 0.0)
        for pid, entry in out.items():
            total = entry.counts["total"]
            entry.fraction = done_sum[pid] / total if total else None
            if known[pid] < total:
                entry.total_steps = None
        return out

    def count_active(self, owner: str) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(active_count(owner)).scalar_one())

    def count_by_status(self, owner: str | None = None) -> dict[str, int]:
        where = [jobs.c.owner == owner] if owner is not None else []
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.status, func.count()).where(*where).group_by(jobs.c.status)).all()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({status: int(n) for status, n in rows})
        return counts

    def durations(self, limit: int = 10_000, owner: str | None = None) -> list[tuple[str, str, float]]:
        """(type, status, seconds from start to end) of the most recently finished jobs."""
        where = [jobs.c.owner == owner] if owner is not None else []
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.type, jobs.c.status, jobs.c.started_at, jobs.c.finished_at)
                .where(jobs.c.started_at.is_not(None), jobs.c.finished_at.is_not(None), *where)
                .order_by(jobs.c.finished_at.desc()).limit(limit)
            ).all()
        return [(r.type, r.status, max(0.0, (r.finished_at - r.started_at).total_seconds())) for r in rows]

    def is_cancel_requested(self, job_id: str) -> bool:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(jobs.c.cancel_requested, jobs.c.status).where(jobs.c.id == job_id)).first()
        return row is None or bool(row.cancel_requested) or row.status == "cancelled"

    def running_held_by(self, prefix: str) -> list[Job]:
        """Running jobs whose holder's name starts with `prefix` (`NODE/`: one worker's processes)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(JOBS.where(
                jobs.c.status == "running", jobs.c.worker.startswith(prefix, autoescape=True))).mappings().all()
        return [Job.from_row(r) for r in rows]

    def stale(self, queued_older_than_s: float, now: datetime | None = None) -> list[Job]:
        """For the reconciler: queued jobs whose message was sent longer ago than
        `queued_older_than_s` (it may be lost), and running jobs whose lease expired."""
        now = now or self.clock.now()
        with self.db.engine.connect() as conn:
            rows = conn.execute(JOBS.where(or_(
                and_(jobs.c.status == "queued", jobs.c.enqueued_at < now - timedelta(seconds=queued_older_than_s)),
                and_(jobs.c.status == "running", jobs.c.lease_expires_at < now),
            )).order_by(jobs.c.created_at)).mappings().all()
        return [Job.from_row(r) for r in rows]

    def unsettled_parents(self) -> list[str]:
        """Running parents none of whose children is queued or running."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.id).where(
                jobs.c.type.in_(PARENT_TYPES), jobs.c.status == "running", ~active_child())).all()
        return [r.id for r in rows]

    def using_dataset(self, owner: str, source: str, limit: int = 5) -> list[Job]:
        """Active jobs of `owner` whose spec names the dataset `source` (dataset:ID)."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(JOBS.where(jobs.c.owner == owner, jobs.c.status.in_(ACTIVE))
                                .order_by(jobs.c.created_at)).mappings().all()
        found = [Job.from_row(r) for r in rows]
        return [job for job in found if _names(job.spec_data, source)][:limit]


def _names(value, source: str) -> bool:
    if isinstance(value, str):
        return value == source
    if isinstance(value, dict):
        return any(_names(v, source) for v in value.values())
    if isinstance(value, list):
        return any(_names(v, source) for v in value)
    return False
