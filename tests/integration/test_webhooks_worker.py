"""Webhooks end to end with real processes: the API records the event when a worker's job
ends, the worker's own dispatcher thread POSTs it, signed, to a receiver on 127.0.0.1 that fails
the first two deliveries and takes the third; every attempt is listed by the API. Then the
whole story in the client: train with `evaluate`, register, alias, download by alias, load."""

from __future__ import annotations

import pytest

from dcl_service import Client
from tests.fixtures.receiver import run_receiver
from tests.fixtures.servers import run_api_server
from tests.integration.helpers import TINY_PRETRAIN, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(240)]

ENV = {"DCL_WEBHOOK_ALLOW_PRIVATE": "true", "DCL_WEBHOOK_RETRY_SECONDS": "0.5", "DCL_WEBHOOK_POLL_SECONDS": "0.2"}
CONFIG = {**TINY_PRETRAIN, "dataset": {"source": "builtin:digits", "image_size": 8, "max_images": 64},
          "max_steps": 3,
          "evaluate": {"train": {"source": "builtin:digits", "image_size": 8, "max_images": 200},
                       "test": {"source": "builtin:digits", "split": "test", "image_size": 8, "max_images": 100},
                       "classifier": "knn"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from tests.fixtures.workers import start_worker

    data_dir = tmp_path_factory.mktemp("webhooks") / "data"
    with run_api_server(data_dir, env=ENV) as api:
        worker = start_worker(data_dir, env=ENV)
        try:
            yield api
        finally:
            worker.stop()
            print(worker.output())


def test_a_workers_dispatcher_delivers_the_signed_event_at_the_third_attempt(stack):
    with run_receiver() as rx, stack.client() as c:
        hook = c.post("/v1/webhooks", json={"url": rx.url, "events": ["job.succeeded", "job.failed"]}).json()
        rx.secret, rx.answers = hook["secret"], [500, 502]
        job = c.post("/v1/jobs", json={"type": "pretrain", "config": CONFIG}).json()
        assert wait_job(c, job["id"], timeout_s=180)["status"] == "succeeded"
        received = rx.wait_for(3, timeout_s=60)
        assert all(r.signed for r in received) and len({r.body for r in received}) == 1
        event = received[0].event
        assert (event["type"], event["data"]["id"], event["data"]["status"]) == ("job.succeeded", job["id"], "succeeded")
        assert "knn_top1" in event["data"]["result"]["scores"]
        [delivery] = c.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"]
        assert delivery["state"] == "delivered"
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 502, 200]


def test_train_register_alias_and_load_by_alias_with_the_client(stack, tmp_path):
    from dcl_core.export import load_encoder

    with Client(stack.url) as client:
        job = client.pretrain(CONFIG)
        job = client.wait(job.id, timeout_s=180)
        assert job.status == "succeeded", job.error
        version = client.register("digits-dcl", job.id)
        client.set_alias("digits-dcl", "production", version.version)
        client.download_model("digits-dcl@production", tmp_path / "prod")
    encoder = load_encoder(tmp_path / "prod")
    import torch

    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    features = encoder(encoder.transform(images))
    assert features.shape[0] == 4 and torch.isfinite(features).all()
