"""The worker's Celery app: the shared configuration of `service.queue.make_celery`
plus the settings only a worker process needs.

`celery -A worker.app worker` works too, but `python -m worker` is the supported
entry point (it pins the GPU and runs the reconciler).
"""

from __future__ import annotations

from service.queue import make_celery
from service.settings import get_settings

app = make_celery(get_settings())

app.conf.update(
    # The tasks module is imported by the worker process when it boots.
    imports=("worker.tasks",),
    # Long GPU jobs: one message at a time, acknowledged only when the task is done,
    # put back on the queue when the process running it dies.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Every job runs in a fresh child process of the prefork pool that exits when the
    # job ends: CUDA (and torch) never initialise in the parent, GPU memory is given
    # back to the driver after every job.
    worker_pool="prefork",
    worker_max_tasks_per_child=1,
    # A killed child's job is handed back within ~1 s instead of Celery's default 10 s
    # wait for a result that (with results ignored) never comes.
    worker_lost_wait=1.0,
    # A broker restart must not kill the training under way: the job keeps its lease in
    # the job store, and the message it came in (unackable on the new connection) is
    # harmless if delivered again. (Celery 6 changes the default to True.)
    worker_cancel_long_running_tasks_on_connection_loss=False,
    # The job store holds results and state; Celery keeps none.
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    broker_connection_retry_on_startup=True,
)
