"""Worker sightings: who said it was alive, when, and what it offers (its queues, devices).
/readyz counts them; a job on several devices is refused when no worker seen lately has that many."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select

from service.control.clock import Clock, SYSTEM
from service.control.db import Database
from service.control.models import WorkerSighting
from service.control.tables import workers


class WorkerRepo:
    def __init__(self, db: Database, clock: Clock = SYSTEM):
        self.db = db
        self.clock = clock

    def seen(self, name: str, info: dict | None = None, *, conn=None, now: datetime | None = None) -> None:
        """`name` is alive (also implied by a claim and a heartbeat, in their transaction)."""
        stmt = self.db.upsert(workers).values(name=name, info=info or {}, seen_at=now or self.clock.now())
        stmt = stmt.on_conflict_do_update(index_elements=["name"],
                                          set_={"info": stmt.excluded.info, "seen_at": stmt.excluded.seen_at})
        if conn is not None:
            conn.execute(stmt)
            return
        with self.db.engine.begin() as own:
            own.execute(stmt)

    def seen_within(self, seconds: float) -> list[WorkerSighting]:
        since = self.clock.now() - timedelta(seconds=seconds)
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(workers).where(workers.c.seen_at >= since)
                                .order_by(workers.c.name)).mappings().all()
        return [WorkerSighting(name=r["name"], info=r["info"] or {}, seen_at=r["seen_at"]) for r in rows]

    def forget(self, node: str) -> None:
        """`node` (a worker) and its job processes (`node/PID`) are gone: no longer counted."""
        with self.db.engine.begin() as conn:
            conn.execute(delete(workers).where(or_(workers.c.name == node,
                                                   workers.c.name.startswith(f"{node}/", autoescape=True))))
