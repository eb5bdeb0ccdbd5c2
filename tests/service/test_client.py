"""The Python client (`from dcl_service import Client`) against a real API over HTTP: typed
records, jobs and sweeps, datasets, metrics page after page, events resumed with
Last-Event-ID, the model registry with checked downloads, webhooks, errors with the service's
message, signatures; and it imports and works where torch cannot be imported."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from dcl_service import ApiError, Client, Dataset, Job, ModelVersion, Webhook, verify_signature
from service.signing import signature_header
from tests.fixtures.servers import dcl_env
from tests.service.conftest import ALICE, BOB, image_zip

pytestmark = pytest.mark.integration


@pytest.fixture
def client(api):
    with Client(api.url, ALICE) as c:
        yield c


def finish(api_plane, job_id: str, files: dict[str, bytes] | None = None, steps: int = 0) -> None:
    """What a worker does: claim, report `steps` metric rows, succeed with `files`."""
    lifecycle = api_plane.lifecycle
    lifecycle.claim(job_id, "w1")
    if steps:
        lifecycle.progress(job_id, "w1", steps, total_steps=steps,
                           rows=[{"step": s, "loss": -s / steps} for s in range(1, steps + 1)])
    written = [api_plane.storage.write_file(job_id, name, data) for name, data in (files or {}).items()]
    lifecycle.succeed(job_id, "w1", {"scores": {"linear_top1": 0.9}}, written)


def test_records_are_typed_dicts(client):
    job = client.pretrain({"epochs": 1, "encoder": "convnet_small"})
    assert isinstance(job, Job) and job.id == job["id"] and job.status == "queued" and not job.done
    assert job.progress.step == 0 and job.spec["config"]["encoder"] == "convnet_small"
    assert json.loads(json.dumps(job))["id"] == job.id
    with pytest.raises(AttributeError, match="no field 'nothing'"):
        job.nothing  # noqa: B018
    assert client.cancel(job.id).status == "cancelled"


def test_errors_carry_the_services_message_and_fields(client):
    with pytest.raises(ApiError) as missing:
        client.job("job_0000000000000000")
    assert missing.value.status == 404 and missing.value.detail == "job job_0000000000000000 not found"
    with pytest.raises(ApiError) as invalid:
        client.pretrain({"batch_size": 1})
    assert invalid.value.status == 422 and [e["field"] for e in invalid.value.errors] == ["config.batch_size"]
    with pytest.raises(ApiError, match="401"), Client(client.url, "not-a-key") as stranger:
        stranger.jobs()


def test_sweeps_members_and_paging(client):
    sweep = client.sweep({"epochs": 1, "device": "cpu"}, {"seed": [0, 1, 2, 3, 4]})
    assert sweep.type == "sweep" and sweep.children["total"] == 5
    members = client.members(sweep.id)
    assert len(members) == 5 and all(m.parent == sweep.id for m in members)
    assert [m.spec["config"]["seed"] for m in members] == [0, 1, 2, 3, 4]
    page = client.jobs(parent=sweep.id, limit=2)
    assert len(page["items"]) == 2 and page.total == 5 and isinstance(page["items"][0], Job)
    client.cancel(sweep.id)


def test_datasets(client, tmp_path):
    dataset = client.upload(image_zip(tmp_path / "pets.zip"), name="pets")
    assert isinstance(dataset, Dataset) and dataset.summary["num_images"] == 6 and dataset.source.startswith("dataset:")
    assert client.dataset(dataset.id).name == "pets"
    assert dataset.id in [d.id for d in client.datasets(limit=500)["items"]]
    client.delete_dataset(dataset.id)
    with pytest.raises(ApiError, match="404"):
        client.dataset(dataset.id)


def test_metrics_iterate_page_after_page_and_events_resume(client, api_plane):
    job = client.pretrain({"epochs": 1})
    finish(api_plane, job.id, steps=2500)
    rows = list(client.iter_metrics(job.id))
    assert [r["step"] for r in rows] == list(range(1, 2501))
    events = list(client.events(job.id, last_event_id="2490"))
    assert [e.data["step"] for e in events if e.event == "metrics"] == list(range(2491, 2501))
    assert events[-1].event == "end" and isinstance(events[-1].data, Job) and events[-1].data.status == "succeeded"


def test_wait_follows_a_job_to_its_end(client, api_plane):
    job = client.pretrain({"epochs": 1})
    seen: list[str] = []

    def play_worker():
        time.sleep(0.5)
        finish(api_plane, job.id, steps=10)

    worker = threading.Thread(target=play_worker)
    worker.start()
    final = client.wait(job.id, progress=lambda j: seen.append(j.status), timeout_s=60)
    worker.join()
    assert final.status == "succeeded" and final.progress.step == 10
    assert seen[0] == "queued" and seen[-1] == "succeeded"


def test_register_alias_and_download_a_model_checked(client, api_plane, tmp_path):
    weights = os.urandom(4000)
    job = client.pretrain({"epochs": 1})
    finish(api_plane, job.id, {"encoder.safetensors": weights, "encoder.json": b'{"feature_dim": 8}'})
    name = f"client-{os.urandom(3).hex()}"
    version = client.register(name, job.id)
    assert isinstance(version, ModelVersion) and version.version == 1 and version.scores == {"linear_top1": 0.9}
    assert client.set_alias(name, "production", 1).version == 1
    assert client.model_version(f"model:{name}@production").job == job.id
    assert client.model_version(f"{name}/1").aliases == ["production"]
    assert client.model(name).versions[0].sha256 == hashlib.sha256(weights).hexdigest()
    assert {a.name for a in client.model_files(f"{name}@production")} == {"encoder.safetensors", "encoder.json"}
    got = client.download_model(f"{name}@production", tmp_path / "prod")
    assert got.version == 1 and (tmp_path / "prod" / "encoder.safetensors").read_bytes() == weights
    probe = client.linear_probe(f"model:{name}@production", "builtin:digits", "builtin:digits")
    assert probe.spec["encoder_job"] == job.id
    with pytest.raises(ApiError, match="409"):
        client.delete(job.id)
    client.delete_alias(name, "production")
    client.delete_model(name)
    with pytest.raises(ApiError, match="404"):
        client.model(name)


def test_a_tampered_download_is_refused_and_removed(client, api_plane, tmp_path):
    job = client.pretrain({"epochs": 1})
    finish(api_plane, job.id, {"encoder.safetensors": b"x" * 3000})
    [artifact] = client.artifacts(job.id)
    (api_plane.storage.run_dir(job.id) / "encoder.safetensors").write_bytes(b"y" * 3000)
    with pytest.raises(ApiError, match="does not match its recorded sha256"):
        client.download_all(job.id, tmp_path / "out")
    lying = {**artifact, "sha256": "0" * 64, "url": f"/v1/jobs/{job.id}/artifacts/encoder.safetensors"}
    (api_plane.storage.run_dir(job.id) / "encoder.safetensors").write_bytes(b"x" * 3000)
    with pytest.raises(Exception, match="Repr-Digest does not match"):
        client.download(job.id, lying, tmp_path / "out")


def test_webhooks(client, api):
    hook = client.create_webhook("https://93.184.215.14/in", events=["job.cancelled"])
    assert isinstance(hook, Webhook) and hook.secret.startswith("whsec_")
    assert [h.secret for h in client.webhooks() if h.id == hook.id] == [None]
    job = client.pretrain({"epochs": 1})
    client.cancel(job.id)
    [delivery] = [d for d in client.deliveries(hook.id)["items"] if d.job == job.id]
    assert delivery.type == "job.cancelled" and delivery.state == "pending"
    with Client(api.url, BOB) as bob, pytest.raises(ApiError, match="404"):
        bob.webhook(hook.id)
    client.delete_webhook(hook.id)


def test_signatures_are_checked_on_the_raw_body_and_time():
    body, secret = b'{"id":"evt_1","type":"job.succeeded"}', "whsec_abc"
    header = signature_header(secret, body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature(secret, header, body, now=1_700_000_100)
    assert not verify_signature("whsec_other", header, body, now=1_700_000_100)
    assert not verify_signature(secret, header, body + b" ", now=1_700_000_100)
    assert not verify_signature(secret, header, body, now=1_700_000_000 + 301)  # a replay, too late
    assert not verify_signature(secret, None, body) and not verify_signature(secret, "t=x,v1=00", body)
    rotated = header + ",v1=" + "0" * 64  # any one v1 that matches will do
    assert verify_signature(secret, rotated, body, now=1_700_000_000)


def test_the_client_works_where_torch_cannot_be_imported(api, tmp_path):
    shim = tmp_path / "no_torch"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nfor name in ('torch', 'torchvision'):\n    sys.modules[name] = None\n")
    code = ("from dcl_service import Client\n"
            f"with Client({api.url!r}, {ALICE!r}) as c:\n"
            "    print(c.pretrain({'epochs': 1}).status, c.models()['total'] >= 0)\n"
            "import sys; print(sorted(m for m, mod in sys.modules.items() if mod is not None\n"
            "                 and m.split('.')[0] in ('torch', 'sqlalchemy', 'fastapi')))")
    env = dcl_env(tmp_path, PYTHONPATH=f"{shim}:{dcl_env(tmp_path)['PYTHONPATH']}")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["queued True", "[]"]
