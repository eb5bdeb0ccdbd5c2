"""Webhooks: an owner's hooks, and the outbox of deliveries they are owed.

`record_events` is called by `lifecycle` inside the transaction that moves a job to
succeeded, failed or cancelled: the event is written with the state change or not at all,
once, and one owner's events only ever go to that owner's hooks. The worker's dispatcher
(`service.control.delivery`) sends them; nothing is sent from the request path.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from service.control.clock import SYSTEM, Clock
from service.control.db import Database, json_safe, new_id
from service.control.models import Delivery, DeliveryAttempt, Job, Webhook
from service.control.tables import jobs, webhook_attempts, webhook_deliveries, webhooks

EVENTS = ("job.succeeded", "job.failed", "job.cancelled")
"""What a hook can subscribe to: a job (a sweep too) reaching that state."""
EVENT_OF_STATUS = {"succeeded": "job.succeeded", "failed": "job.failed", "cancelled": "job.cancelled"}

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

wd, wa = webhook_deliveries.c, webhook_attempts.c

_NOT_SHOWN = {"owner", "queue", "enqueued_at", "lease_expires_at", "heartbeat_at", "step", "total_steps", "epoch"}
_RENAMED = {"spec_data": "spec", "parent_id": "parent"}


def job_data(job: Job) -> dict[str, Any]:
    """The job as an event carries it: the fields `GET /v1/jobs/{id}` shows, as stored when it ended."""
    out: dict[str, Any] = {}
    for f in fields(job):
        if f.name in _NOT_SHOWN:
            continue
        value = getattr(job, f.name)
        out[_RENAMED.get(f.name, f.name)] = value.isoformat() if isinstance(value, datetime) else value
    out["progress"] = {"step": job.step, "total_steps": job.total_steps, "epoch": job.epoch}
    return json_safe(out)


def record_events(conn, job_ids: list[str], now: datetime) -> int:
    """In the caller's transaction: one delivery for each hook of each job's owner that subscribes
    to the state the job is in now (terminal states only). Returns how many were written."""
    if not job_ids:
        return 0
    ended = [Job.from_row(r) for r in conn.execute(select(jobs).where(jobs.c.id.in_(job_ids))).mappings()
             if r["status"] in EVENT_OF_STATUS]
    if not ended:
        return 0
    hooks = conn.execute(select(webhooks.c.id, webhooks.c.owner, webhooks.c.events)
                         .where(webhooks.c.owner.in_({job.owner for job in ended}))).all()
    rows = []
    for job in ended:
        kind = EVENT_OF_STATUS[job.status]
        targets = [h.id for h in hooks if h.owner == job.owner and kind in (h.events or [])]
        if not targets:
            continue
        event_id = new_id("evt")
        payload = json.dumps({"id": event_id, "type": kind, "created": int(now.timestamp()), "data": job_data(job)},
                             separators=(",", ":"), allow_nan=False)
        rows += [dict(id=new_id("whd"), webhook_id=hook_id, event_id=event_id, type=kind, job_id=job.id,
                      payload=payload, state=PENDING, attempts=0, next_attempt_at=now, created_at=now)
                 for hook_id in targets]
    if rows:
        conn.execute(insert(webhook_deliveries), rows)
    return len(rows)


@dataclass(frozen=True)
class Claimed:
    """A delivery a dispatcher holds for one attempt."""

    id: str
    url: str
    secret: str
    type: str
    payload: str
    attempt: int
    created_at: datetime


class WebhookRepo:
    def __init__(self, db: Database, clock: Clock = SYSTEM):
        self.db = db
        self.clock = clock

    # ---- hooks -------------------------------------------------------------------------------

    def create(self, owner: str, url: str, events: list[str]) -> Webhook:
        hook = Webhook(new_id("wh"), owner, url, tuple(events), "whsec_" + secrets.token_hex(24), self.clock.now())
        with self.db.engine.begin() as conn:
            conn.execute(insert(webhooks).values(id=hook.id, owner=owner, url=url, events=list(events),
                                                 secret=hook.secret, created_at=hook.created_at))
        return hook

    def list(self, owner: str) -> list[Webhook]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(webhooks).where(webhooks.c.owner == owner)
                                .order_by(webhooks.c.created_at, webhooks.c.id)).all()
        return [_hook(r) for r in rows]

    def get(self, webhook_id: str, owner: str) -> Webhook | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(webhooks).where(webhooks.c.id == webhook_id, webhooks.c.owner == owner)).first()
        return _hook(row) if row is not None else None

    def count(self, owner: str) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(webhooks).where(webhooks.c.owner == owner))
                       .scalar_one())

    def delete(self, webhook_id: str, owner: str) -> bool:
        """The hook, its deliveries (pending ones are never sent) and their attempts."""
        with self.db.engine.begin() as conn:
            mine = [webhooks.c.id == webhook_id, webhooks.c.owner == owner]
            if not conn.execute(delete(webhooks).where(*mine)).rowcount:
                return False
            ids = select(wd.id).where(wd.webhook_id == webhook_id).scalar_subquery()
            conn.execute(delete(webhook_attempts).where(wa.delivery_id.in_(ids)))
            conn.execute(delete(webhook_deliveries).where(wd.webhook_id == webhook_id))
        return True

    def deliveries(self, webhook_id: str, *, limit: int = 50, offset: int = 0) -> tuple[list[Delivery], int]:
        """A page of the hook's deliveries, newest first, each with its attempts."""
        with self.db.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(webhook_deliveries)
                                 .where(wd.webhook_id == webhook_id)).scalar_one()
            rows = conn.execute(select(webhook_deliveries).where(wd.webhook_id == webhook_id)
                                .order_by(wd.created_at.desc(), wd.id.desc()).limit(limit).offset(offset)).all()
            tries: dict[str, list[DeliveryAttempt]] = {}
            if rows:
                for a in conn.execute(select(webhook_attempts).where(wa.delivery_id.in_([r.id for r in rows]))
                                      .order_by(wa.number)).all():
                    tries.setdefault(a.delivery_id, []).append(
                        DeliveryAttempt(a.number, a.at, a.status_code, a.error, a.duration_ms))
        return [Delivery(r.id, r.webhook_id, r.event_id, r.type, r.job_id, r.state, r.attempts, r.next_attempt_at,
                         r.created_at, r.finished_at, tuple(tries.get(r.id, ()))) for r in rows], int(total)

    # ---- the dispatcher's side ---------------------------------------------------------------

    def due(self, now: datetime, limit: int) -> list[str]:
        """Pending deliveries whose time has come, oldest first."""
        with self.db.engine.connect() as conn:
            return list(conn.execute(select(wd.id).where(wd.state == PENDING, wd.next_attempt_at <= now)
                                     .order_by(wd.next_attempt_at).limit(limit)).scalars())

    def claim(self, delivery_id: str, now: datetime, hold_until: datetime) -> Claimed | None:
        """Take a due delivery for one attempt (compare-and-set: of dispatchers racing, one wins).
        Held until `hold_until`: a dispatcher that dies mid-attempt leaves it to be tried again then."""
        with self.db.engine.begin() as conn:
            attempt = conn.execute(
                update(webhook_deliveries).where(wd.id == delivery_id, wd.state == PENDING, wd.next_attempt_at <= now)
                .values(attempts=wd.attempts + 1, next_attempt_at=hold_until).returning(wd.attempts)).scalar()
            if attempt is None:
                return None
            row = conn.execute(select(wd.type, wd.payload, wd.created_at, webhooks.c.url, webhooks.c.secret)
                               .join(webhooks, webhooks.c.id == wd.webhook_id).where(wd.id == delivery_id)).first()
        if row is None:  # its hook was deleted meanwhile
            return None
        return Claimed(delivery_id, row.url, row.secret, row.type, row.payload, int(attempt), row.created_at)

    def record_attempt(self, claimed: Claimed, *, at: datetime, status_code: int | None, error: str | None,
                       duration_ms: int, next_attempt_at: datetime | None) -> str:
        """The attempt's outcome; the delivery is `delivered` (no error), `pending` again at
        `next_attempt_at`, or `failed` (given up: no next attempt). Returns the new state."""
        state = DELIVERED if error is None else PENDING if next_attempt_at is not None else FAILED
        with self.db.engine.begin() as conn:
            conn.execute(insert(webhook_attempts).values(delivery_id=claimed.id, number=claimed.attempt, at=at,
                                                         status_code=status_code, error=error,
                                                         duration_ms=duration_ms))
            conn.execute(update(webhook_deliveries).where(wd.id == claimed.id).values(
                state=state, next_attempt_at=next_attempt_at if state == PENDING else None,
                finished_at=None if state == PENDING else at))
        return state

    def prune(self, finished_before: datetime) -> int:
        """Forget deliveries that ended before `finished_before`, with their attempts."""
        with self.db.engine.begin() as conn:
            old = select(wd.id).where(wd.state != PENDING, wd.finished_at < finished_before).scalar_subquery()
            conn.execute(delete(webhook_attempts).where(wa.delivery_id.in_(old)))
            return conn.execute(delete(webhook_deliveries).where(wd.state != PENDING,
                                                                 wd.finished_at < finished_before)).rowcount


def _hook(row) -> Webhook:
    return Webhook(row.id, row.owner, row.url, tuple(row.events or ()), row.secret, row.created_at)
