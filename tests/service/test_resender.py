"""The API's resender against a real redis-server that is down, then up."""

from __future__ import annotations

from service.control.queue import make_celery
from service.resender import Resender
from service.control.settings import Settings
from service.store import JobStore
from tests.fixtures.servers import free_port
from tests.integration.helpers import redis_process
from worker.reconciler import pending_job_ids

SPEC = {"type": "pretrain", "config": {"device": "cpu"}}


def test_waiting_jobs_are_sent_once_the_broker_is_back_and_cancelled_ones_never(tmp_path):
    port = free_port()  # nothing listens there yet: the broker is down
    settings = Settings(data_dir=tmp_path / "data", broker_url=f"redis://127.0.0.1:{port}/0")
    settings.ensure_dirs()
    store, celery = JobStore(settings.database_url), make_celery(settings)
    kept = store.create_job("me", "pretrain", SPEC, queue="cpu")
    dropped = store.create_job("me", "pretrain", SPEC, queue="cpu")
    resender = Resender(store, celery, interval_s=3600)  # passes are run by hand here
    resender.add(kept["id"], "cpu")
    resender.add(dropped["id"], "cpu")
    try:
        assert resender.send_waiting() == 0
        assert resender.pending() == [kept["id"], dropped["id"]]
        store.cancel(dropped["id"], "me")
        with redis_process(tmp_path / "redis", port=port):
            assert resender.send_waiting() == 1
            assert resender.pending() == []
            assert pending_job_ids(celery, ["cpu"]) == {kept["id"]}
    finally:
        resender.stop()
        celery.close()
        store.dispose()
