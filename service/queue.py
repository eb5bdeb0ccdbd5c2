"""The Celery side shared by the API (producer) and the worker (consumer).

Task names are defined here once; the API sends by name (`send_task`) and never imports
the worker. A message carries only the job id: the job store row is the truth.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

from service.settings import Settings, get_settings

RUN_JOB = "dcl.run_job"
"""The one task: run the job whose id is the message's only argument."""

# Long enough that Redis does not redeliver a running job's message while it trains
# (celery#5935); the lease in the job store is what detects a dead worker.
VISIBILITY_TIMEOUT_S = 7 * 24 * 3600


_QUICK = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "timeout": 2}
"""Health checks answer within seconds when the broker is down."""
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.3, "interval_max": 0.5}
"""A submit waits a moment for the broker, not long: the job is in the store either way and
the reconciler sends it again."""


def make_celery(settings: Settings | None = None) -> Celery:
    """The Celery app with the settings a long GPU task needs."""
    settings = settings or get_settings()
    if settings.embedded_broker:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("dcl", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,
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


def queue_for(spec: dict, settings: Settings) -> str:
    """Jobs asking for the CPU go to the cpu queue, everything else to the gpu queue; a job on N > 1
    devices to that queue's `-xN` variant, which only workers with N or more devices consume."""
    config = spec.get("config", spec)
    queue = settings.cpu_queue if str(config.get("device", "auto")) == "cpu" else settings.gpu_queue
    devices = int((spec.get("resources") or {}).get("gpus") or 1)
    return multi_device_queue(queue, devices)


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
