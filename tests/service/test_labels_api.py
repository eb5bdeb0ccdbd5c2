"""Names, tags, notes and scores over real HTTP, on SQLite and PostgreSQL: set at submit and by
PATCH (owner only: another key gets 404), the list's filters with pagination and its sort by
score, a sweep's members named after their grid point, and an encoder's `evaluations`."""

from __future__ import annotations

import pytest

from service.control.plane import ControlPlane
from service.control.settings import Settings
from tests.service.conftest import ALICE, BOB
from tests.service.databases import DATABASES, api_on

pytestmark = pytest.mark.integration

TINY = {"encoder": "convnet_small", "epochs": 1, "batch_size": 8, "dataset": "builtin:digits", "device": "cpu"}
PROBE = {"type": "linear_probe", "train": "builtin:digits", "test": {"source": "builtin:digits", "split": "test"},
         "device": "cpu"}


@pytest.fixture(scope="module", params=DATABASES)
def api(request, tmp_path_factory):
    env = {"DCL_MAX_ACTIVE_JOBS_PER_KEY": "10000"}
    with api_on(request.param, tmp_path_factory.mktemp("labels") / "data", keys=[ALICE, BOB], env=env) as server:
        yield server


@pytest.fixture(scope="module")
def worker(api):
    """A control plane on the API's store, standing in for a worker (claim, succeed)."""
    url = api.env.get("DCL_DATABASE_URL")
    plane = ControlPlane(Settings(data_dir=api.data_dir, **({"database_url": url} if url else {})))
    yield plane
    plane.close()


@pytest.fixture
def alice(api):
    with api.client(ALICE) as c:
        yield c


@pytest.fixture
def bob(api):
    with api.client(BOB) as c:
        yield c


def submit(client, body=None, **labels) -> dict:
    r = client.post("/v1/jobs", json={**(body or {"type": "pretrain", "config": TINY}), **labels})
    assert r.status_code == 202, r.text
    return r.json()


def finish(worker, job_id: str, result: dict) -> None:
    worker.lifecycle.claim(job_id, "w")
    worker.lifecycle.succeed(job_id, "w", result)


def ids(page: dict) -> list[str]:
    return [j["id"] for j in page["items"]]


def test_names_tags_and_notes_at_submit_and_by_patch(alice, bob):
    job = submit(alice, name="  cifar r18 ", tags=["exp:7", "baseline", "exp:7"], notes="first try\nlr 0.3")
    assert (job["name"], job["tags"], job["notes"]) == ("cifar r18", ["baseline", "exp:7"], "first try\nlr 0.3")
    assert "name" not in job["spec"] and "tags" not in job["spec"]  # labels are not what runs
    url = f"/v1/jobs/{job['id']}"

    r = alice.patch(url, json={"name": "cifar r18 lr0.3", "add_tags": ["keep"], "remove_tags": ["baseline"]})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["tags"], r.json()["notes"]) == ("cifar r18 lr0.3", ["exp:7", "keep"],
                                                                       "first try\nlr 0.3")
    r = alice.patch(url, json={"notes": None, "tags": ["only"]})
    assert (r.json()["name"], r.json()["tags"], r.json()["notes"]) == ("cifar r18 lr0.3", ["only"], None)
    assert alice.get(url).json()["tags"] == ["only"]
    assert alice.patch(url, json={"tags": None}).json()["tags"] == []

    # Another key's job is not there for it, in any way.
    assert bob.patch(url, json={"name": "mine"}).status_code == 404
    assert bob.get("/v1/jobs", params={"tag": "only"}).json()["total"] == 0
    assert alice.get(url).json()["name"] == "cifar r18 lr0.3"


@pytest.mark.parametrize("body, field", [
    ({"name": ""}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": "two\nlines"}, "name"),
    ({"tags": ["has space"]}, "tags.0"),
    ({"tags": ["t" * 65]}, "tags.0"),
    ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
    ({"notes": "n" * 10_001}, "notes"),
    ({"notes": "nul \u0000 byte"}, "notes"),
])
def test_bad_labels_are_422_naming_the_field(alice, body, field):
    r = alice.post("/v1/jobs", json={"type": "pretrain", "config": TINY, **body})
    assert r.status_code == 422 and field in [e["field"] for e in r.json()["errors"]], r.text
    job = submit(alice)
    r = alice.patch(f"/v1/jobs/{job['id']}", json=body)
    assert r.status_code == 422 and field in [e["field"] for e in r.json()["errors"]], r.text


def test_patch_refuses_more_than_twenty_tags_and_odd_bodies(alice):
    job = submit(alice, tags=[f"t{i}" for i in range(19)])
    url = f"/v1/jobs/{job['id']}"
    r = alice.patch(url, json={"add_tags": ["a", "b"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "add_tags" and "21 tags" in r.json()["detail"]
    assert len(alice.get(url).json()["tags"]) == 19  # nothing written
    assert alice.patch(url, json={"add_tags": ["a"]}).json()["tags"][0] == "a"
    assert alice.patch(url, json={"colour": "red"}).status_code == 422
    assert alice.patch(url, content=b"name=x", headers={"content-type": "text/plain"}).status_code == 415
    assert alice.patch("/v1/jobs/job_0000000000000000", json={"name": "x"}).status_code == 404


def test_tag_filters_all_must_match_and_page(alice):
    both = [submit(alice, tags=["filt:a", "filt:b"], name=f"both {i}")["id"] for i in range(5)]
    only_a = submit(alice, tags=["filt:a"], name="only A")["id"]
    seen, offset = [], 0
    while True:
        page = alice.get("/v1/jobs", params=[("tag", "filt:a"), ("tag", "filt:b"), ("limit", "2"),
                                             ("offset", str(offset))]).json()
        assert page["total"] == 5 and len(page["items"]) <= 2
        seen += ids(page)
        offset += 2
        if offset >= page["total"]:
            break
    assert seen == both[::-1]  # newest first, each once
    assert set(ids(alice.get("/v1/jobs", params={"tag": "filt:a", "limit": 50}).json())) == {*both, only_a}
    assert ids(alice.get("/v1/jobs", params={"tag": "filt:a", "q": "ONLY"}).json()) == [only_a]
    assert ids(alice.get("/v1/jobs", params={"tag": "filt:a", "q": "both 3"}).json()) == [both[3]]
    assert alice.get("/v1/jobs", params={"q": "100%_"}).json()["total"] == 0  # LIKE wildcards are text
    assert alice.get("/v1/jobs", params={"tag": "bad tag"}).status_code == 422
    page = alice.get("/v1/jobs", params={"tag": "filt:a", "sort": "created", "limit": 1}).json()
    assert ids(page) == [both[0]]


def test_filters_by_type_method_encoder_dataset_and_status(alice, worker):
    tag = {"tags": ["fil2"]}
    dcl = submit(alice, {"type": "pretrain", "config": {**TINY, "method": "dcl"}}, **tag)
    simclr = submit(alice, {"type": "pretrain", "config": {**TINY, "method": "simclr", "encoder": "resnet18",
                                                           "dataset": {"source": "builtin:digits", "max_images": 64}}},
                    **tag)
    finish(worker, dcl["id"], {"loss": -1.0})
    probe = submit(alice, {**PROBE, "encoder_job": dcl["id"]}, **tag)

    def found(**params) -> set[str]:
        return set(ids(alice.get("/v1/jobs", params={"tag": "fil2", **params}).json()))

    assert found(method="dcl") == {dcl["id"]} and found(method="simclr") == {simclr["id"]}
    assert found(encoder="resnet18") == {simclr["id"]}
    assert found(encoder=dcl["id"]) == {probe["id"]}
    assert found(dataset="builtin:digits") == {dcl["id"], simclr["id"], probe["id"]}
    assert found(dataset="ds_0123456789abcdef") == set()
    assert found(type="linear_probe") == {probe["id"]}
    assert found(status="succeeded") == {dcl["id"]}
    assert alice.get("/v1/jobs", params={"sort": "best"}).status_code == 422


def test_scores_link_probes_to_their_encoder_and_sort_the_list(alice, bob, worker):
    tag = {"tags": ["scored"]}
    evaluated = submit(alice, **tag)
    probed = submit(alice, **tag)
    unscored = submit(alice, **tag)
    finish(worker, evaluated["id"], {"scores": {"linear_top1": 0.61, "knn_top1": 0.7}})
    finish(worker, probed["id"], {"loss": -1.0})
    assert alice.get(f"/v1/jobs/{probed['id']}").json()["evaluations"] == []

    first = submit(alice, {**PROBE, "encoder_job": probed["id"]}, name="probe 1", **tag)
    knn = submit(alice, {**PROBE, "classifier": "knn", "encoder_job": probed["id"]}, **tag)
    second = submit(alice, {**PROBE, "encoder_job": probed["id"]}, **tag)
    embed = submit(alice, {"type": "embed", "data": "builtin:digits", "device": "cpu", "encoder_job": probed["id"]})
    finish(worker, first["id"], {"accuracy": 0.5, "classifier": "logistic"})
    finish(worker, knn["id"], {"accuracy": 0.9, "classifier": "knn"})  # not linear: not the encoder's score
    assert alice.get(f"/v1/jobs/{probed['id']}").json()["score"] == 0.5
    finish(worker, second["id"], {"accuracy": 0.75, "classifier": "logistic"})

    encoder = alice.get(f"/v1/jobs/{probed['id']}").json()
    assert encoder["score"] == 0.75  # its latest linear probe
    evaluations = {e["id"]: e for e in encoder["evaluations"]}
    assert list(evaluations) == [embed["id"], second["id"], knn["id"], first["id"]]  # newest first
    assert (evaluations[first["id"]]["name"], evaluations[first["id"]]["score"]) == ("probe 1", 0.5)
    assert evaluations[knn["id"]]["classifier"] == "knn" and evaluations[embed["id"]]["score"] is None
    assert alice.get(f"/v1/jobs/{evaluated['id']}").json()["score"] == 0.61  # its own evaluate comes first

    by_score = alice.get("/v1/jobs", params={"tag": "scored", "sort": "-score"}).json()["items"]
    assert [j["score"] for j in by_score] == [0.9, 0.75, 0.75, 0.61, 0.5, None]
    assert by_score[-1]["id"] == unscored["id"]
    ascending = alice.get("/v1/jobs", params={"tag": "scored", "sort": "score"}).json()["items"]
    assert [j["score"] for j in ascending] == [0.5, 0.61, 0.75, 0.75, 0.9, None]

    # The probe that gave the encoder its score goes: the one before it takes over.
    assert alice.delete(f"/v1/jobs/{second['id']}").status_code == 204
    assert alice.get(f"/v1/jobs/{probed['id']}").json()["score"] == 0.5
    assert bob.get(f"/v1/jobs/{probed['id']}").status_code == 404


def test_sweep_members_are_named_after_their_grid_point_and_carry_its_tags(alice):
    sweep = submit(alice, {"type": "sweep", "config": TINY, "grid": {"method": ["dcl", "simclr"],
                                                                     "batch_size": [8, 16], "seed": [1]}},
                   name="dcl vs simclr", tags=["sweep:1"])
    members = alice.get("/v1/jobs", params={"parent": sweep["id"], "sort": "created"}).json()["items"]
    assert [m["name"] for m in members] == ["dcl b8 seed1", "dcl b16 seed1", "simclr b8 seed1", "simclr b16 seed1"]
    assert all(m["tags"] == ["sweep:1"] for m in members)
    assert alice.get("/v1/jobs", params={"tag": "sweep:1"}).json()["total"] == 5
    assert alice.get(f"/v1/jobs/{sweep['id']}").json()["name"] == "dcl vs simclr"
