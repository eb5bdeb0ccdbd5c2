"""The record of a job's files (name, size, sha256): what the API lists and checks before serving."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from service.control.clock import Clock, SYSTEM
from service.control.db import Database
from service.control.models import Artifact
from service.control.tables import artifacts

_COLUMNS = (artifacts.c.name, artifacts.c.size, artifacts.c.sha256, artifacts.c.created_at)


class ArtifactRepo:
    def __init__(self, db: Database, clock: Clock = SYSTEM):
        self.db = db
        self.clock = clock

    def list(self, job_id: str) -> list[Artifact]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(*_COLUMNS).where(artifacts.c.job_id == job_id)
                                .order_by(artifacts.c.name)).mappings().all()
        return [Artifact(**r) for r in rows]

    def get(self, job_id: str, name: str) -> Artifact | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(*_COLUMNS).where(artifacts.c.job_id == job_id, artifacts.c.name == name)
                               ).mappings().first()
        return Artifact(**row) if row is not None else None

    def put(self, job_id: str, items: Iterable[tuple[str, int, str]], conn=None) -> None:
        """Record (or replace) files of a job, in `conn`'s transaction when given."""
        now = self.clock.now()
        values = [{"job_id": job_id, "name": name, "size": int(size), "sha256": sha, "created_at": now}
                  for name, size, sha in items]
        if not values:
            return
        stmt = self.db.upsert(artifacts).values(values)
        stmt = stmt.on_conflict_do_update(index_elements=["job_id", "name"], set_={
            "size": stmt.excluded.size, "sha256": stmt.excluded.sha256, "created_at": stmt.excluded.created_at})
        if conn is not None:
            conn.execute(stmt)
            return
        with self.db.engine.begin() as own:
            own.execute(stmt)
