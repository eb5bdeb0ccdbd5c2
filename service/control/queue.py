"""The Celery side shared by the API (producer) and the workers (consumers): one configuration.

Task names are defined here once; the API sends by name (`send_task`) and never imports the
worker. A message carries only the job id: the job store row is the truth.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from celery import Celery

from dcl_core.jobs.base import runs_on
from dcl_core.jobs import JOB_TYPES
from service.control.settings import Settings, get_settings

log = logging.getLogger(__name__)

RUN_JOB = "dcl.run_job"
"""The one task: run the job whose id is the message's only argument."""

# Long enough that Redis does not redeliver a running job's message while it trains
# (celery#5935); the lease in the job store is what detects a dead worker.
VISIBILITY_TIMEOUT_S = 7 * 24 * 3600

_QUICK = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "timeout": 2}
"""Health checks answer within seconds when the broker is down."""
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.3, "interval_max": 0.5}
"""A submit waits a moment for the broker, not long: the job is in the store either way and
is sent again (the API's resender, the reconciler)."""


def make_celery(settings: Settings | None = None) -> Celery:
    """The Celery app both sides use, with the settings a long GPU job needs."""
    settings = settings or get_settings()
    if settings.embedded_broker:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("dcl", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        # The job store holds results and state; Celery keeps none.
        task_ignore_result=True,
        result_backend=None,
        # Long jobs: one message at a time, acknowledged only when the job is done, put back on
        # the queue when the process running it dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Every job runs in a fresh child process of the prefork pool that exits when the job
        # ends: CUDA never initialises in the parent, GPU memory goes back to the driver.
        worker_pool="prefork",
        worker_max_tasks_per_child=1,
        # A killed child's job is handed back within ~1 s instead of Celery's default 10 s wait
        # for a result that (with results ignored) never comes.
        worker_lost_wait=1.0,
        # A broker restart must not kill the training under way: the job keeps its lease in the
        # job store, and a message delivered again is harmless. (Celery 6 changes the default.)
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # kombu's SQLAlchemy transport hands these options to create_engine(): none for it.
        broker_transport_options={} if settings.broker_url.startswith("sqla+")
        else {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        task_default_queue=settings.gpu_queue,
        task_routes={RUN_JOB: {"queue": settings.gpu_queue}},
        task_create_missing_queues=True,
    )
    return app


@lru_cache
def default_app() -> Celery:
    return make_celery(get_settings())


def queue_for(spec: Any, settings: Settings) -> str | None:
    """The queue a typed job spec goes to: jobs asking for the CPU to the cpu queue, the others to
    the gpu queue; a job on N > 1 devices to that queue's `-xN` variant, which only workers with N
    or more devices consume. None for a type that runs on no worker (a sweep: its children do)."""
    kind = JOB_TYPES.get(spec.type)
    if kind is None or not kind.runs_on_worker:
        return None
    queue = settings.cpu_queue if runs_on(spec.device) == "cpu" else settings.gpu_queue
    return multi_device_queue(queue, spec.devices)


def multi_device_queue(queue: str, devices: int) -> str:
    return queue if devices <= 1 else f"{queue}-x{devices}"


def device_queues(queue: str, devices: int) -> list[str]:
    """The queues a worker with `devices` devices consumes for `queue`: jobs on 1..devices of them."""
    return [multi_device_queue(queue, n) for n in range(1, max(1, devices) + 1)]


def enqueue(job_id: str, queue: str, app: Celery | None = None, countdown: float | None = None) -> None:
    """Send the run-job message for `job_id` to `queue` (to be run no sooner than `countdown` s)."""
    (app or default_app()).send_task(RUN_JOB, args=[job_id], queue=queue, retry=True, retry_policy=_PUBLISH_RETRY,
                                      countdown=countdown)


def queue_depths(app: Celery, queues: list[str]) -> dict[str, int]:
    """Messages waiting in each queue (raises when the broker is unreachable)."""
    depths: dict[str, int] = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(**_QUICK)
        channel = conn.default_channel
        for name in queues:
            try:
                depths[name] = int(channel.queue_declare(name, passive=True).message_count)
            except Exception:  # the queue does not exist yet: nothing was ever sent to it
                depths[name] = 0
                channel = conn.channel()
    return depths


def broker_ping(app: Celery) -> dict[str, Any]:
    with app.connection_for_read() as conn:
        conn.ensure_connection(**_QUICK)
    return {"ok": True}


def pending_job_ids(app: Celery, queues: Iterable[str]) -> set[str] | None:
    """Job ids with a message waiting (not yet delivered) in `queues`, or None when the broker's
    transport cannot be looked into (only Redis and SQLAlchemy can) or is unreachable."""
    found: set[str | None] = set()
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
            driver = conn.transport.driver_name
            channel = conn.default_channel
            if driver == "redis":
                for queue in queues:
                    for priority in channel.priority_steps:
                        for raw in channel.client.lrange(channel._q_for_pri(queue, priority), 0, -1):
                            found.add(_job_id_of(raw))
            elif driver == "sqlalchemy":
                message_cls = channel.message_cls
                try:
                    for queue in queues:
                        for message in channel._query_all(queue).filter(message_cls.visible.is_(True)):
                            found.add(_job_id_of(message.payload))
                finally:
                    channel.session.commit()
            else:
                return None
    except Exception:
        log.warning("could not look into the broker's queues", exc_info=True)
        return None
    found.discard(None)
    return found  # type: ignore[return-value]


def _job_id_of(payload: Any) -> str | None:
    """The job id in a Celery (protocol 2) message as the virtual transports store it."""
    if isinstance(payload, (bytes, str)):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    if not isinstance(payload, dict):
        return None
    headers = payload.get("headers") or {}
    if headers.get("task") not in (None, RUN_JOB):
        return None
    body = payload.get("body")
    try:
        if (payload.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body) if isinstance(body, (bytes, str)) else body
        args = decoded[0] if isinstance(decoded, list) else decoded.get("args")
        return str(args[0]) if args else None
    except Exception:
        return None
