"""/v1/webhooks over real HTTP, on SQLite and PostgreSQL: made with a secret shown once, listed,
deleted; private and malformed targets refused (422 naming `url`) without
DCL_WEBHOOK_ALLOW_PRIVATE; deliveries recorded when a job ends, listed per hook; another key's
hook a 404. (Sending them is the worker's: tests/service/test_webhook_delivery.py and
tests/integration/test_webhooks_worker.py.)"""

from __future__ import annotations

import pytest

from tests.service.conftest import ALICE, BOB, CAROL
from tests.service.databases import DATABASES, api_on

pytestmark = pytest.mark.integration

PUBLIC = "https://93.184.215.14/hooks/dcl"
"""A public address: accepted (nothing is sent to it here: no worker runs)."""


@pytest.fixture(scope="module", params=DATABASES)
def api(request, tmp_path_factory):
    env = {"DCL_MAX_WEBHOOKS_PER_KEY": "3"}
    with api_on(request.param, tmp_path_factory.mktemp("hooks") / "data", keys=[ALICE, BOB, CAROL], env=env) as api:
        yield api


@pytest.fixture
def alice(api):
    with api.client(ALICE) as c:
        yield c


@pytest.fixture
def bob(api):
    with api.client(BOB) as c:
        yield c


def test_a_webhook_is_made_with_its_secret_shown_once_then_listed_and_deleted(alice):
    r = alice.post("/v1/webhooks", json={"url": PUBLIC, "events": ["job.succeeded", "job.failed"]})
    assert r.status_code == 201, r.text
    hook = r.json()
    assert hook["id"].startswith("wh_") and hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert hook["events"] == ["job.succeeded", "job.failed"] and r.headers["location"] == f"/v1/webhooks/{hook['id']}"
    shown = alice.get(f"/v1/webhooks/{hook['id']}").json()
    assert shown == {**hook, "secret": None}
    assert hook["id"] in [h["id"] for h in alice.get("/v1/webhooks").json()["items"]]
    assert all(h["secret"] is None for h in alice.get("/v1/webhooks").json()["items"])
    default = alice.post("/v1/webhooks", json={"url": PUBLIC}).json()
    assert default["events"] == ["job.succeeded", "job.failed", "job.cancelled"]
    for made in (hook, default):
        assert alice.delete(f"/v1/webhooks/{made['id']}").status_code == 204
    assert alice.get(f"/v1/webhooks/{hook['id']}").status_code == 404
    assert alice.delete(f"/v1/webhooks/{hook['id']}").status_code == 404


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://10.0.0.8/hook", "http://192.168.1.20/hook",
    "http://172.17.0.1/hook", "http://169.254.169.254/latest/meta-data/", "http://[::1]:9000/hook",
    "http://[::ffff:127.0.0.1]/hook", "http://100.64.0.1/hook", "http://0.0.0.0/hook", "http://2130706433/",
])
def test_private_targets_are_refused_without_the_setting(alice, url):
    r = alice.post("/v1/webhooks", json={"url": url})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "url"
    assert "DCL_WEBHOOK_ALLOW_PRIVATE" in r.json()["detail"]


@pytest.mark.parametrize("body, field, words", [
    ({"url": "ftp://93.184.215.14/x"}, "url", "https://"),
    ({"url": "https://user:pw@93.184.215.14/x"}, "url", "user name"),
    ({"url": "https://no-such-host.invalid/x"}, "url", "does not resolve"),
    ({"url": "not a url"}, "url", "spaces"),
    ({"url": "https://" + "a" * 2100}, "url", "2048"),
    ({"url": PUBLIC, "events": ["job.exploded"]}, "events.0", "job.succeeded"),
    ({"url": PUBLIC, "events": []}, "events", "at least 1"),
    ({"events": ["job.failed"]}, "url", "required"),
    ({"url": PUBLIC, "secret": "mine"}, "secret", "not permitted"),
])
def test_bad_webhooks_are_422_naming_the_field(alice, body, field, words):
    r = alice.post("/v1/webhooks", json=body)
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]] and words in r.json()["detail"], r.json()


def test_a_key_has_at_most_its_cap_of_webhooks(api):
    with api.client(CAROL) as carol:
        made = [carol.post("/v1/webhooks", json={"url": PUBLIC}).status_code for _ in range(4)]
        assert made == [201, 201, 201, 409]
        assert "delete one" in carol.post("/v1/webhooks", json={"url": PUBLIC}).json()["detail"]


def test_another_key_gets_404_and_never_sees_my_events(alice, bob):
    mine = alice.post("/v1/webhooks", json={"url": PUBLIC}).json()
    theirs = bob.post("/v1/webhooks", json={"url": PUBLIC}).json()
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/deliveries")):
        r = bob.request(method, f"/v1/webhooks/{mine['id']}{path}")
        assert r.status_code == 404 and r.json()["detail"] == f"webhook {mine['id']} not found"
    assert mine["id"] not in [h["id"] for h in bob.get("/v1/webhooks").json()["items"]]
    job = alice.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()
    assert alice.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    page = alice.get(f"/v1/webhooks/{mine['id']}/deliveries").json()
    [delivery] = [d for d in page["items"] if d["job"] == job["id"]]
    assert delivery["type"] == "job.cancelled" and delivery["state"] == "pending" and delivery["attempts"] == []
    assert delivery["event_id"].startswith("evt_") and page["webhook_id"] == mine["id"]
    assert job["id"] not in [d["job"] for d in bob.get(f"/v1/webhooks/{theirs['id']}/deliveries").json()["items"]]
    assert alice.get(f"/v1/webhooks/{mine['id']}/deliveries", params={"limit": 0}).status_code == 422
    assert alice.get("/v1/webhooks/wh_..%2F..").status_code in (404, 422)
