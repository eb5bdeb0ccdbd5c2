"""The model registry over real HTTP, on SQLite and PostgreSQL: versions, aliases, files served as
artifacts are, `model:NAME@ALIAS` in probes (resolved at submit, even while the alias moves),
a registered job kept from deletion, and another key seeing none of it (404, never 403). The
worker's side is played through the control plane."""

from __future__ import annotations

import base64
import hashlib
import os
import threading

import pytest

from service.control.plane import ControlPlane
from service.control.settings import Settings
from tests.service.conftest import ALICE, BOB
from tests.service.databases import DATABASES, api_on

pytestmark = pytest.mark.integration

DIGITS = {"train": "builtin:digits", "test": {"source": "builtin:digits", "split": "test"}}


@pytest.fixture(scope="module", params=DATABASES)
def stack(request, tmp_path_factory):
    """(API, a control plane on its store) with keys ALICE and BOB; jobs stay queued (no worker)."""
    env = {"DCL_MAX_ACTIVE_JOBS_PER_KEY": "10000"}
    with api_on(request.param, tmp_path_factory.mktemp("models") / "data", keys=[ALICE, BOB], env=env) as api:
        plane = ControlPlane(Settings(data_dir=api.data_dir, database_url=api.env.get("DCL_DATABASE_URL", "")))
        yield api, plane
        plane.close()


@pytest.fixture
def alice(stack):
    with stack[0].client(ALICE) as c:
        yield c


@pytest.fixture
def bob(stack):
    with stack[0].client(BOB) as c:
        yield c


def trained(stack, client, score: float = 0.5) -> str:
    """A pretrain job of `client`'s key that succeeded, with an encoder.safetensors and encoder.json."""
    _, plane = stack
    job_id = client.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()["id"]
    plane.lifecycle.claim(job_id, "w1")
    files = [plane.storage.write_file(job_id, "encoder.safetensors", os.urandom(5000)),
             plane.storage.write_file(job_id, "encoder.json", b'{"encoder": "resnet18"}')]
    plane.lifecycle.succeed(job_id, "w1", {"scores": {"linear_top1": score}}, files)
    return job_id


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def probe(client, encoder: str):
    return client.post("/v1/jobs", json={"type": "linear_probe", "encoder_job": encoder, **DIGITS})


def test_each_registration_is_the_next_version_with_its_job_scores_and_sha256(stack, alice):
    name = unique("cifar-r18")
    first, second = trained(stack, alice, 0.5), trained(stack, alice, 0.7)
    r = alice.post("/v1/models", json={"name": name, "job": first})
    assert r.status_code == 201, r.text
    v1 = r.json()
    assert (v1["name"], v1["version"], v1["job"], v1["scores"]) == (name, 1, first, {"linear_top1": 0.5})
    assert r.headers["location"] == f"/v1/models/{name}/versions/1" == v1["url"]
    assert v1["sha256"] == stack[1].artifacts.get(first, "encoder.safetensors").sha256
    assert v1["source"] == f"model:{name}/1" and v1["created_at"]
    assert alice.post("/v1/models", json={"name": name, "job": second}).json()["version"] == 2
    model = alice.get(f"/v1/models/{name}").json()
    assert [(v["version"], v["job"]) for v in model["versions"]] == [(2, second), (1, first)]
    assert model["latest_version"] == 2 and model["version_count"] == 2
    assert alice.get(f"/v1/models/{name}/versions/1").json() == {**v1, "aliases": []}
    listed = {m["name"]: m for m in alice.get("/v1/models", params={"limit": 500}).json()["items"]}
    assert listed[name]["latest_version"] == 2 and listed[name]["versions"] == []
    # A deleted version's number is never given again.
    assert alice.delete(f"/v1/models/{name}/versions/2").status_code == 204
    assert alice.post("/v1/models", json={"name": name, "job": trained(stack, alice)}).json()["version"] == 3


def test_registrations_at_once_get_one_number_each_and_a_job_is_one_version(stack, alice):
    name, jobs = unique("race"), [trained(stack, alice) for _ in range(3)]
    answers: list = []

    def register(job_id: str) -> None:
        with stack[0].client(ALICE) as c:
            answers.append(c.post("/v1/models", json={"name": name, "job": job_id}))

    threads = [threading.Thread(target=register, args=(job_id,)) for job_id in jobs + jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    made = [r.json() for r in answers if r.status_code == 201]
    assert sorted(v["version"] for v in made) == [1, 2, 3] and sorted(v["job"] for v in made) == sorted(jobs)
    assert sorted(r.status_code for r in answers) == [201, 201, 201, 409, 409, 409], [r.text for r in answers]


def test_an_alias_points_at_a_version_moves_and_goes(stack, alice):
    name = unique("m")
    for _ in range(2):
        alice.post("/v1/models", json={"name": name, "job": trained(stack, alice)})
    r = alice.put(f"/v1/models/{name}/aliases/production", json={"version": 1})
    assert r.status_code == 200 and r.json() == {"name": name, "alias": "production", "version": 1}
    assert alice.get(f"/v1/models/{name}@production").json()["version"] == 1
    assert alice.put(f"/v1/models/{name}/aliases/production", json={"version": 2}).status_code == 200
    found = alice.get(f"/v1/models/{name}@production").json()
    assert found["version"] == 2 and found["aliases"] == ["production"]
    assert alice.get(f"/v1/models/{name}").json()["aliases"] == {"production": 2}
    r = alice.put(f"/v1/models/{name}/aliases/production", json={"version": 7})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "version"
    assert "has no version 7; its versions are 1, 2" in r.json()["detail"]
    r = alice.delete(f"/v1/models/{name}/versions/2")
    assert r.status_code == 409 and "alias production" in r.json()["detail"]
    assert alice.delete(f"/v1/models/{name}/aliases/production").status_code == 204
    r = alice.get(f"/v1/models/{name}@production")
    assert r.status_code == 404 and "no alias 'production'" in r.json()["detail"]
    assert alice.delete(f"/v1/models/{name}/aliases/production").status_code == 404


def test_a_versions_files_are_served_as_job_artifacts_are(stack, alice):
    name, job_id = unique("m"), trained(stack, alice)
    alice.post("/v1/models", json={"name": name, "job": job_id})
    alice.put(f"/v1/models/{name}/aliases/prod", json={"version": 1})
    data = (stack[0].data_dir / "artifacts" / job_id / "encoder.safetensors").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    for base in (f"/v1/models/{name}@prod", f"/v1/models/{name}/versions/1"):
        listed = {a["name"]: a for a in alice.get(f"{base}/files").json()["items"]}
        assert listed["encoder.safetensors"]["sha256"] == digest
        assert listed["encoder.safetensors"]["url"] == f"/v1/models/{name}/versions/1/files/encoder.safetensors"
        r = alice.get(f"{base}/files/encoder.safetensors")
        assert r.status_code == 200 and r.content == data and r.headers["etag"] == f'"{digest}"'
        assert r.headers["repr-digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:"
        r = alice.get(f"{base}/files/encoder.safetensors", headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == data[100:200]
        assert alice.get(f"{base}/files/encoder.safetensors", headers={"If-None-Match": f'"{digest}"'}).status_code == 304
        assert alice.get(f"{base}/files/nope.bin").status_code == 404
    (stack[0].data_dir / "artifacts" / job_id / "encoder.safetensors").write_bytes(b"tampered")
    r = alice.get(f"/v1/models/{name}@prod/files/encoder.safetensors")
    assert r.status_code == 409 and "sha256" in r.json()["detail"]


def test_another_key_gets_404_for_every_model_alias_and_file(stack, alice, bob):
    name, job_id = unique("private"), trained(stack, alice)
    alice.post("/v1/models", json={"name": name, "job": job_id})
    alice.put(f"/v1/models/{name}/aliases/prod", json={"version": 1})
    for method, path, body in (
        ("GET", f"/v1/models/{name}", None), ("GET", f"/v1/models/{name}@prod", None),
        ("GET", f"/v1/models/{name}/versions/1", None), ("GET", f"/v1/models/{name}@prod/files", None),
        ("GET", f"/v1/models/{name}/versions/1/files/encoder.safetensors", None),
        ("PUT", f"/v1/models/{name}/aliases/prod", {"version": 1}), ("DELETE", f"/v1/models/{name}/aliases/prod", None),
        ("DELETE", f"/v1/models/{name}/versions/1", None), ("DELETE", f"/v1/models/{name}", None),
    ):
        r = bob.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
    assert name not in [m["name"] for m in bob.get("/v1/models").json()["items"]]
    r = bob.post("/v1/models", json={"name": name, "job": job_id})  # alice's job
    assert r.status_code == 404 and job_id in r.json()["detail"]
    r = probe(bob, f"model:{name}@prod")
    assert r.status_code == 404 and r.json()["detail"].startswith(f"encoder_job model:{name}@prod")
    # Bob's own model of the same name is his alone.
    assert bob.post("/v1/models", json={"name": name, "job": trained(stack, bob)}).json()["version"] == 1
    assert alice.get(f"/v1/models/{name}@prod").json()["job"] == job_id


def test_what_cannot_be_registered_is_a_4xx_naming_the_field(stack, alice):
    queued = alice.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()["id"]
    done = trained(stack, alice)
    name = unique("m")
    cases = [({"name": "no spaces", "job": done}, 422, "name"), ({"name": "a@b", "job": done}, 422, "name"),
             ({"name": "x" * 101, "job": done}, 422, "name"), ({"name": name, "job": "../etc"}, 422, "job"),
             ({"name": name}, 422, "job"), ({"name": name, "job": done, "extra": 1}, 422, "extra"),
             ({"name": name, "job": "job_0000000000000000"}, 404, None), ({"name": name, "job": queued}, 409, None)]
    for body, status, field in cases:
        r = alice.post("/v1/models", json=body)
        assert r.status_code == status, (body, r.text)
        if field:
            assert field in [e["field"] for e in r.json()["errors"]], r.json()
    assert "queued" in alice.post("/v1/models", json={"name": name, "job": queued}).json()["detail"]
    embed = alice.post("/v1/jobs", json={"type": "embed", "encoder_job": done, "data": "builtin:digits"}).json()
    r = alice.post("/v1/models", json={"name": name, "job": embed["id"]})
    assert r.status_code == 409 and "embed job" in r.json()["detail"]
    assert alice.post("/v1/models", json={"name": name, "job": done}).status_code == 201
    r = alice.post("/v1/models", json={"name": name, "job": done})
    assert r.status_code == 409 and "already version 1" in r.json()["detail"]
    assert alice.put(f"/v1/models/{name}/aliases/1abc", json={"version": 1}).status_code == 422
    assert alice.put(f"/v1/models/{name}/aliases/prod", json={"version": 0}).status_code == 422
    assert alice.put(f"/v1/models/{name}/aliases/prod", content=b'{"version": 1}').status_code == 415
    assert alice.get(f"/v1/models/{name}/versions/0").status_code == 422
    assert alice.get("/v1/models/nothing-here").status_code == 404


def test_a_probe_runs_the_version_its_alias_named_at_submit_even_while_the_alias_moves(stack, alice):
    name = unique("m")
    jobs = [trained(stack, alice) for _ in range(2)]
    for job_id in jobs:
        alice.post("/v1/models", json={"name": name, "job": job_id})
    alice.put(f"/v1/models/{name}/aliases/prod", json={"version": 1})
    ref = f"model:{name}@prod"
    first = probe(alice, ref).json()
    assert (first["spec"]["encoder_job"], first["spec"]["encoder_model"]) == (jobs[0], ref)
    stop, moves = threading.Event(), []

    def keep_moving():
        with stack[0].client(ALICE) as mover:
            while not stop.is_set():
                version = 2 if len(moves) % 2 == 0 else 1
                assert mover.put(f"/v1/models/{name}/aliases/prod", json={"version": version}).status_code == 200
                moves.append(version)

    mover = threading.Thread(target=keep_moving)
    mover.start()
    try:
        submitted = [probe(alice, ref) for _ in range(8)]
    finally:
        stop.set()
        mover.join()
    assert moves and all(r.status_code == 202 for r in submitted), [r.text for r in submitted]
    assert {r.json()["spec"]["encoder_job"] for r in submitted} <= set(jobs)
    final = alice.get(f"/v1/models/{name}@prod").json()["job"]
    assert probe(alice, ref).json()["spec"]["encoder_job"] == final
    assert alice.get(f"/v1/jobs/{first['id']}").json()["spec"]["encoder_job"] == jobs[0]  # never re-resolved
    by_number = alice.post("/v1/jobs", json={"type": "embed", "encoder_job": f"model:{name}/2",
                                             "data": "builtin:digits"}).json()
    assert (by_number["spec"]["encoder_job"], by_number["spec"]["encoder_model"]) == (jobs[1], f"model:{name}/2")
    for bad, status in ((f"model:{name}@staging", 404), (f"model:{name}/9", 404), ("model:nobody@prod", 404),
                        (f"model:{name}@1x", 422), ("model:", 422)):
        r = probe(alice, bad)
        assert r.status_code == status, (bad, r.text)
    assert "is not registered" in probe(alice, "model:nobody@prod").json()["detail"]


def test_a_registered_job_cannot_be_deleted_until_its_version_is(stack, alice):
    name, job_id = unique("keep"), trained(stack, alice)
    alice.post("/v1/models", json={"name": name, "job": job_id})
    r = alice.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 409 and f"version 1 of model {name}" in r.json()["detail"]
    assert alice.get(f"/v1/jobs/{job_id}").status_code == 200
    assert alice.get(f"/v1/models/{name}/versions/1/files/encoder.json").status_code == 200
    assert alice.delete(f"/v1/models/{name}/versions/1").status_code == 204
    assert alice.delete(f"/v1/jobs/{job_id}").status_code == 204


def test_a_sweep_with_a_registered_member_cannot_be_deleted(stack, alice):
    _, plane = stack
    sweep = alice.post("/v1/jobs", json={"type": "sweep", "config": {"epochs": 1}, "grid": {"seed": [0, 1]}}).json()
    members = [j["id"] for j in alice.get("/v1/jobs", params={"parent": sweep["id"]}).json()["items"]]
    for member in members:
        plane.lifecycle.claim(member, "w1")
        plane.lifecycle.succeed(member, "w1", {"scores": {"linear_top1": 0.4}})
    assert alice.get(f"/v1/jobs/{sweep['id']}").json()["status"] == "succeeded"
    name = unique("member")
    alice.post("/v1/models", json={"name": name, "job": members[0]})
    r = alice.delete(f"/v1/jobs/{sweep['id']}")
    assert r.status_code == 409 and f"its member {members[0]} is version 1 of model {name}" in r.json()["detail"]
    assert all(alice.get(f"/v1/jobs/{i}").status_code == 200 for i in [sweep["id"], *members])
    assert alice.delete(f"/v1/models/{name}").status_code == 204
    assert alice.delete(f"/v1/jobs/{sweep['id']}").status_code == 204
