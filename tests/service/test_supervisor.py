"""`dcl serve --embedded`'s supervision, in process: a worker that dies (any signal, any exit
code) is restarted with the reason said, backs off while it keeps dying, and its running jobs are
queued again at once; /readyz says `no worker` while it is down; one server per data folder."""

from __future__ import annotations

import os
import signal
import sys
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from dcl_core.errors import UserError
from service.api.app import create_app
from service.control.reconcile import take_over
from service.control.settings import Settings
from service.datalock import lock_data_dir
from service.supervisor import EmbeddedWorker
from tests.fixtures.control import open_plane, submit
from tests.fixtures.waiting import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
CRASHER = [sys.executable, "-c", "import sys; sys.exit(3)"]


@pytest.fixture
def supervised():
    started = []

    def make(command, **kwargs):
        deaths: list[str] = []
        worker = EmbeddedWorker(on_death=deaths.append, command=lambda node: command, **kwargs)
        worker.deaths = deaths
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop(grace_s=2)


def test_a_killed_worker_is_restarted_its_jobs_taken_over_and_the_signal_named(supervised, capsys):
    worker = supervised(SLEEPER, first_delay_s=0.05)
    first_pid, first_node = worker.proc.pid, worker.node
    wait_until(lambda: worker.alive, what="started")
    os.killpg(first_pid, signal.SIGKILL)  # what the OOM killer does to the whole group
    wait_until(lambda: worker.restarts == 1 and worker.alive, what="restarted")
    assert worker.proc.pid != first_pid and worker.node != first_node
    assert worker.deaths == [first_node]
    err = capsys.readouterr().err
    assert f"(pid {first_pid}) was killed by SIGKILL" in err and "restarting it" in err


def test_a_worker_that_keeps_dying_is_restarted_ever_more_slowly(supervised, capsys):
    worker = supervised(CRASHER, first_delay_s=0.02, max_delay_s=0.16)
    wait_until(lambda: worker.restarts >= 5, what="five restarts")
    assert worker.delay_s == 0.16  # 0.02, 0.04, 0.08, 0.16, then no longer
    assert "exited with code 3" in capsys.readouterr().err


def test_no_worker_while_it_waits_to_restart_and_a_stop_ends_the_wait(supervised):
    worker = supervised(CRASHER, first_delay_s=60)
    wait_until(lambda: worker.deaths, what="first death")
    assert not worker.alive and worker.restarts == 0
    started = time.monotonic()
    worker.stop(grace_s=2)
    assert time.monotonic() - started < 30  # not the 60 s back-off (a hang guard, not a timing)
    assert worker.restarts == 0


def test_a_stop_takes_over_what_the_last_worker_left_and_restarts_nothing(supervised):
    worker = supervised(SLEEPER, first_delay_s=0.01)
    node = worker.node
    worker.stop(grace_s=2)
    assert worker.deaths == [node] and worker.restarts == 0 and not worker.alive


def test_take_over_requeues_only_the_dead_workers_jobs_and_forgets_it(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    with open_plane(settings) as plane:
        spec = {"type": "pretrain", "config": {"epochs": 1, "device": "cpu"}}
        dead, alive = submit(plane, "me", spec), submit(plane, "me", spec)
        plane.lifecycle.claim(dead.id, "dcl-embedded-1-1@box/123")
        plane.lifecycle.claim(alive.id, "dcl-embedded-1-10@box/7")  # a name the dead one's is a prefix of
        plane.workers.seen("dcl-embedded-1-1@box", {"pid": 1})
        assert take_over(plane, "dcl-embedded-1-1@box") == [dead.id]
        assert plane.jobs.get(dead.id).status == "queued" and plane.jobs.get(dead.id).worker is None
        assert plane.jobs.get(alive.id).status == "running"
        assert [w.name for w in plane.workers.seen_within(60)] == ["dcl-embedded-1-10@box/7"]


def test_readyz_is_503_no_worker_while_the_embedded_worker_is_down(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"))) as client:
        assert "embedded" not in client.get("/readyz").json()["workers"]  # distributed: counted, not required
        client.app.state.embedded_worker = SimpleNamespace(alive=False, restarts=2)
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["detail"] == "not ready: no worker"
        assert r.json()["workers"]["embedded"] == {"alive": False, "restarts": 2}
        client.app.state.embedded_worker = SimpleNamespace(alive=True, restarts=2)
        assert client.get("/readyz").status_code == 200


def test_a_second_server_on_one_data_folder_is_refused_naming_the_holder(tmp_path):
    held = lock_data_dir(tmp_path)
    with pytest.raises(UserError, match=rf"another `dcl serve` \(pid {os.getpid()}\) is using the data folder"):
        lock_data_dir(tmp_path)
    held.close()  # the holder ends: the folder is free again
    lock_data_dir(tmp_path).close()
