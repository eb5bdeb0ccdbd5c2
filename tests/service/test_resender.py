"""The API's resender (the plane's dispatcher with `resend_in_background`) against a real
redis-server that is down, then up."""

from __future__ import annotations

from service.control.clock import FakeClock
from service.control.queue import pending_job_ids
from service.control.settings import Settings
from tests.fixtures.control import open_plane, submit
from tests.fixtures.servers import free_port
from tests.integration.helpers import redis_process

SPEC = {"type": "pretrain", "config": {"device": "cpu"}}


def test_waiting_jobs_are_sent_once_the_broker_is_back_and_cancelled_ones_never(tmp_path):
    port = free_port()  # nothing listens there yet: the broker is down
    settings = Settings(data_dir=tmp_path / "data", broker_url=f"redis://127.0.0.1:{port}/0")
    settings.ensure_dirs()
    clock = FakeClock()
    with open_plane(settings, clock=clock, resend_in_background=True) as plane:
        plane.dispatcher.interval_s = 3600  # passes are run by hand here
        kept = submit(plane, "me", SPEC)  # the broker does not take it: it waits in the dispatcher
        dropped = submit(plane, "me", SPEC)
        assert plane.dispatcher.send_waiting() == 0
        assert plane.dispatcher.pending() == [kept.id, dropped.id]
        plane.lifecycle.cancel(dropped.id, "me")
        clock.advance(30)
        with redis_process(tmp_path / "redis", port=port):
            assert plane.dispatcher.send_waiting() == 1
            assert plane.dispatcher.pending() == []
            assert pending_job_ids(plane.celery, ["cpu"]) == {kept.id}
        assert plane.jobs.get(kept.id).enqueued_at == clock.now()  # the reconciler waits from the real send
