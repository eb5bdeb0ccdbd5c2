"""Uploaded datasets' records, and the bytes a key stores (its datasets and its jobs' artifacts)."""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select, update

from service.control.clock import Clock, SYSTEM
from service.control.db import Database, new_id
from service.control.models import Dataset
from service.control.tables import artifacts, datasets, jobs


class DatasetRepo:
    def __init__(self, db: Database, clock: Clock = SYSTEM):
        self.db = db
        self.clock = clock

    def create(self, owner: str, name: str, summary: dict, bytes: int, *, id: str | None = None,
               sha256: str | None = None) -> Dataset:
        row = dict(id=id or new_id("ds"), owner=owner, name=name, summary=summary, bytes=int(bytes),
                   created_at=self.clock.now(), sha256=sha256)
        with self.db.engine.begin() as conn:
            conn.execute(insert(datasets).values(**row))
        return Dataset(**row)

    def get(self, dataset_id: str, owner: str | None = None) -> Dataset | None:
        query = select(datasets).where(datasets.c.id == dataset_id)
        if owner is not None:
            query = query.where(datasets.c.owner == owner)
        with self.db.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return Dataset(**row) if row is not None else None

    def list(self, owner: str | None, limit: int = 100, offset: int = 0) -> tuple[list[Dataset], int]:
        where = [datasets.c.owner == owner] if owner is not None else []
        with self.db.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(datasets).where(*where)).scalar_one()
            rows = conn.execute(select(datasets).where(*where).order_by(datasets.c.created_at.desc())
                                .limit(limit).offset(offset)).mappings().all()
        return [Dataset(**r) for r in rows], int(total)

    def delete(self, dataset_id: str, owner: str | None = None) -> bool:
        where = [datasets.c.id == dataset_id] + ([datasets.c.owner == owner] if owner is not None else [])
        with self.db.engine.begin() as conn:
            return bool(conn.execute(delete(datasets).where(*where)).rowcount)

    def set_sha256(self, dataset_id: str, sha256: str) -> None:
        """Record the sha256 of a dataset's packed form (`dcl storage migrate`)."""
        with self.db.engine.begin() as conn:
            conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(sha256=sha256))

    def stored_bytes(self, owner: str) -> int:
        """Bytes a key stores: its datasets and its jobs' artifacts (as recorded, never by listing files)."""
        with self.db.engine.connect() as conn:
            ds = conn.execute(
                select(func.coalesce(func.sum(datasets.c.bytes), 0)).where(datasets.c.owner == owner)
            ).scalar_one()
            arts = conn.execute(
                select(func.coalesce(func.sum(artifacts.c.size), 0))
                .select_from(artifacts.join(jobs, jobs.c.id == artifacts.c.job_id)).where(jobs.c.owner == owner)
            ).scalar_one()
        return int(ds) + int(arts)
