"""The control plane as one object, built once per process from the settings: the database and
its repositories (jobs, metrics, datasets, artifacts, workers, the model registry, webhooks),
the storage, the queue and the lifecycle. The API keeps one in its app state;
a worker process keeps one for its jobs."""

from __future__ import annotations

from pathlib import Path

from service.control.clock import SYSTEM, Clock
from service.control.dataset_cache import DatasetCache
from service.control.datasets import DatasetRepo
from service.control.db import Database
from service.control.dispatch import Dispatcher
from service.control.lifecycle import Lifecycle, Plot
from service.control.metrics import MetricsRepo
from service.control.objectstore import S3Store, parse_storage_url
from service.control.queue import make_celery
from service.control.registry import ModelRegistry
from service.control.settings import Settings
from service.control.storage import LocalStorage
from service.control.webhooks import WebhookRepo


def make_storage(settings: Settings, store_patience_s: float | None = None) -> LocalStorage:
    """The storage DCL_STORAGE_URL names; `store_patience_s`: how long a call waits for an
    unreachable object store (default DCL_STORE_RETRY_SECONDS, a worker's patience)."""
    url = parse_storage_url(settings.storage_url)
    if not url.remote:
        return LocalStorage(Path(settings.artifacts_dir), Path(settings.datasets_dir))
    remote = S3Store(url, endpoint_url=settings.s3_endpoint_url,
                     patience_s=store_patience_s if store_patience_s is not None else settings.store_retry_seconds)
    cache = DatasetCache(Path(settings.cache_dir) / "stored-datasets", settings.dataset_cache_bytes)
    return LocalStorage(Path(settings.artifacts_dir), Path(settings.datasets_dir), remote=remote, cache=cache)


class ControlPlane:
    def __init__(self, settings: Settings, *, db: Database | None = None, celery=None, clock: Clock = SYSTEM,
                 plot: Plot | None = None, resend_in_background: bool = False,
                 store_patience_s: float | None = None):
        self.settings = settings
        self.clock = clock
        self.db = db or Database(settings.database_url)
        self._own_celery = celery is None
        self.celery = celery if celery is not None else make_celery(settings)
        self.storage = make_storage(settings, store_patience_s)
        self.dispatcher = Dispatcher(self.celery, still_queued=self._still_queued, on_sent=self._sent,
                                     retry_in_background=resend_in_background)
        self.lifecycle = Lifecycle(self.db, self.storage, self.dispatcher, settings, clock=clock, plot=plot)
        self.jobs, self.artifacts, self.workers = self.lifecycle.jobs, self.lifecycle.artifacts, self.lifecycle.workers
        self.metrics = MetricsRepo(self.db)
        self.datasets = DatasetRepo(self.db, clock)
        self.registry = ModelRegistry(self.db, clock)
        self.webhooks = WebhookRepo(self.db, clock)

    def _still_queued(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        return job is not None and job.status == "queued"

    def _sent(self, job_id: str) -> None:
        self.lifecycle.mark_sent(job_id)

    def close(self) -> None:
        self.dispatcher.stop()
        self.db.dispose()
        if self._own_celery:
            self.celery.close()
