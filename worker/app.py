"""The worker's Celery app: the shared configuration (`service.control.queue.make_celery`) and
the task module it runs. `python -m worker` is the supported entry point (it pins the GPU and
runs the reconciler); `celery -A worker.app worker` works too."""

from __future__ import annotations

from service.control.queue import make_celery
from service.control.settings import get_settings

app = make_celery(get_settings())
app.conf.update(imports=("worker.tasks",))
