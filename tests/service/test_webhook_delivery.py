"""Webhook deliveries, one dispatcher pass at a time, on SQLite and PostgreSQL, on a clock the
test moves: signed POSTs to a real receiver on 127.0.0.1, retried with exponential back-off on
non-2xx and time-outs until 24 h after the event, redirects not followed, private targets
refused without DCL_WEBHOOK_ALLOW_PRIVATE, one owner's events only at its own hooks."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import pytest

from service.control.delivery import Deliverer
from service.control.egress import UnsafeTarget, check_target, is_public
from service.control.settings import Settings
from service.control.webhooks import EVENTS
from tests.fixtures.control import submit
from tests.fixtures.receiver import run_receiver

PRETRAIN = {"type": "pretrain", "config": {"epochs": 1, "device": "cpu"}}


def settings(plane, **overrides) -> Settings:
    values = dict(webhook_allow_private=True, webhook_retry_seconds=10, webhook_retry_max_seconds=3600,
                  webhook_timeout_seconds=2)
    return Settings(data_dir=plane.settings.data_dir, **{**values, **overrides})


def ended(plane, owner: str = "alice", how: str = "succeed") -> str:
    job = submit(plane, owner, PRETRAIN)
    plane.lifecycle.claim(job.id, "w1")
    if how == "succeed":
        plane.lifecycle.succeed(job.id, "w1", {"scores": {"linear_top1": 0.75}})
    else:
        plane.lifecycle.fail(job.id, "diverged", worker="w1")
    return job.id


def deliveries(plane, hook_id: str) -> list:
    return plane.webhooks.deliveries(hook_id)[0]


def test_a_receiver_that_fails_twice_gets_the_third_attempt_signed(plane, clock):
    with run_receiver() as rx:
        hook = plane.webhooks.create("alice", rx.url, list(EVENTS))
        rx.secret, rx.answers = hook.secret, [500, 503]
        job_id = ended(plane)
        sender = Deliverer(plane.db, settings(plane), clock=clock)
        try:
            assert [state for _, state in sender.run_once()] == ["pending"]
            assert sender.run_once() == []  # not due yet
            clock.advance(9.9)
            assert sender.run_once() == []
            clock.advance(0.2)
            assert [state for _, state in sender.run_once()] == ["pending"]
            clock.advance(20)  # the wait doubles
            assert [state for _, state in sender.run_once()] == ["delivered"]
            clock.advance(3600)
            assert sender.run_once() == []
        finally:
            sender.close()
    assert len(rx.received) == 3 and all(r.signed for r in rx.received)
    assert len({r.body for r in rx.received}) == 1  # the same event, re-signed each time
    event = rx.received[0].event
    assert event["type"] == "job.succeeded" and event["id"].startswith("evt_") and isinstance(event["created"], int)
    assert event["data"]["id"] == job_id and event["data"]["status"] == "succeeded"
    assert event["data"]["result"] == {"scores": {"linear_top1": 0.75}} and "owner" not in event["data"]
    headers = {k.lower(): v for k, v in rx.received[0].headers.items()}
    assert headers["x-dcl-event"] == "job.succeeded" and headers["content-type"] == "application/json"
    [delivery] = deliveries(plane, hook.id)
    assert (delivery.state, delivery.job_id, delivery.event_id) == ("delivered", job_id, event["id"])
    assert [(a.number, a.status_code) for a in delivery.tries] == [(1, 500), (2, 503), (3, 200)]
    assert delivery.tries[0].error == "HTTP 500: receiver says no" and delivery.tries[2].error is None


def test_a_hanging_receiver_times_out_is_tried_again_and_the_job_is_untouched(plane, clock):
    with run_receiver() as rx:
        hook = plane.webhooks.create("alice", rx.url, ["job.failed"])
        rx.secret, rx.answers = hook.secret, [("hang", 5)]
        job_id = ended(plane, how="fail")
        sender = Deliverer(plane.db, settings(plane, webhook_timeout_seconds=0.5), clock=clock)
        try:
            assert [state for _, state in sender.run_once()] == ["pending"]
            [delivery] = deliveries(plane, hook.id)
            assert delivery.tries[0].error == "timed out after 0.5 s" and delivery.tries[0].status_code is None
            job = plane.jobs.get(job_id)
            assert (job.status, job.error) == ("failed", "diverged")
            clock.advance(10)
            assert [state for _, state in sender.run_once()] == ["delivered"]
        finally:
            sender.close()
    assert [r.event["type"] for r in rx.received] == ["job.failed", "job.failed"]


def test_retries_back_off_exponentially_and_stop_24_hours_after_the_event(plane, clock):
    with run_receiver() as rx:
        hook = plane.webhooks.create("alice", rx.url, list(EVENTS))
        rx.secret, rx.answers = hook.secret, [500] * 100
        ended(plane)
        start = clock.now()
        sender = Deliverer(plane.db, settings(plane), clock=clock)
        attempts_at = []
        try:
            for _ in range(100):
                [(_, state)] = sender.run_once()
                attempts_at.append(clock.now())
                if state == "failed":
                    break
                [pending] = deliveries(plane, hook.id)
                clock.advance((pending.next_attempt_at - clock.now()).total_seconds() - 0.5)
                assert sender.run_once() == []  # not a moment early
                clock.advance(0.5)
        finally:
            sender.close()
    [delivery] = deliveries(plane, hook.id)
    assert delivery.state == "failed" and delivery.next_attempt_at is None
    gaps = [(b - a).total_seconds() for a, b in zip(attempts_at, attempts_at[1:])]
    assert gaps[:5] == [10, 20, 40, 80, 160]
    assert max(gaps) == 3600 and all(g2 >= g1 for g1, g2 in zip(gaps, gaps[1:]))
    assert timedelta(hours=23) < attempts_at[-1] - start <= timedelta(hours=24)
    assert len(rx.received) == len(attempts_at) == len(delivery.tries)


def test_private_targets_are_refused_at_delivery_without_the_setting(plane, clock):
    with run_receiver() as rx:  # made before the setting was off (or a name that now resolves privately)
        hook = plane.webhooks.create("alice", rx.url, list(EVENTS))
        ended(plane)
        sender = Deliverer(plane.db, settings(plane, webhook_allow_private=False), clock=clock)
        try:
            assert [state for _, state in sender.run_once()] == ["pending"]
        finally:
            sender.close()
    [delivery] = deliveries(plane, hook.id)
    assert delivery.tries[0].error.startswith("refused: host '127.0.0.1' resolves to 127.0.0.1")
    assert rx.received == []


def test_redirects_are_not_followed(plane, clock):
    with run_receiver() as rx, run_receiver() as elsewhere:
        hook = plane.webhooks.create("alice", rx.url, list(EVENTS))
        rx.secret, rx.answers = hook.secret, [("redirect", elsewhere.url)]
        ended(plane)
        sender = Deliverer(plane.db, settings(plane), clock=clock)
        try:
            sender.run_once()
        finally:
            sender.close()
    [delivery] = deliveries(plane, hook.id)
    assert delivery.tries[0].status_code == 302 and "redirects are not followed" in delivery.tries[0].error
    assert len(rx.received) == 1 and elsewhere.received == []


def test_an_owners_events_go_to_its_own_hooks_that_subscribe_to_them(plane, clock):
    alice_fails = plane.webhooks.create("alice", "https://hooks.example/a", ["job.failed"])
    alice_all = plane.webhooks.create("alice", "https://hooks.example/b", list(EVENTS))
    bobs = plane.webhooks.create("bob", "https://hooks.example/c", list(EVENTS))
    succeeded, failed = ended(plane), ended(plane, how="fail")
    cancelled = submit(plane, "alice", PRETRAIN).id
    plane.lifecycle.cancel(cancelled)  # a queued job, cancelled from the API
    assert {(d.job_id, d.type) for d in deliveries(plane, alice_all.id)} == {
        (succeeded, "job.succeeded"), (failed, "job.failed"), (cancelled, "job.cancelled")}
    assert [(d.job_id, d.type) for d in deliveries(plane, alice_fails.id)] == [(failed, "job.failed")]
    assert deliveries(plane, bobs.id) == []
    bob_job = ended(plane, "bob")
    assert [d.job_id for d in deliveries(plane, bobs.id)] == [bob_job]
    assert plane.webhooks.delete(bobs.id, "alice") is False and plane.webhooks.get(bobs.id, "alice") is None


def test_a_sweep_that_ends_is_an_event_too(plane):
    hook = plane.webhooks.create("alice", "https://hooks.example/a", ["job.succeeded"])
    sweep = submit(plane, "alice", {"type": "sweep", "config": {"epochs": 1, "device": "cpu"}, "grid": {"seed": [0, 1]}})
    for member in plane.jobs.children(sweep.id):
        plane.lifecycle.claim(member.id, "w1")
        plane.lifecycle.succeed(member.id, "w1", {})
    assert sorted(d.job_id for d in deliveries(plane, hook.id)) == sorted(
        [sweep.id] + [m.id for m in plane.jobs.children(sweep.id)])


def test_two_dispatchers_send_a_delivery_once(plane, clock):
    with run_receiver() as rx:
        hook = plane.webhooks.create("alice", rx.url, list(EVENTS))
        rx.secret = hook.secret
        ended(plane)
        senders = [Deliverer(plane.db, settings(plane), clock=clock) for _ in range(2)]
        threads = [threading.Thread(target=s.run_once) for s in senders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in senders:
            s.close()
    assert len(rx.received) == 1 and deliveries(plane, hook.id)[0].state == "delivered"


def fake_resolver(address: str):
    def resolve(host, port, type=None):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
    return resolve


def test_the_address_checked_is_the_address_connected_to(plane):
    sender = Deliverer(plane.db, settings(plane, webhook_allow_private=False), resolve=fake_resolver("93.184.215.14"))
    headers: dict[str, str] = {}
    url, extensions = sender._pinned("https://hooks.example:8443/in?x=1", headers)
    assert url == "https://93.184.215.14:8443/in?x=1"
    assert headers["Host"] == "hooks.example:8443" and extensions == {"sni_hostname": "hooks.example"}
    rebound = Deliverer(plane.db, settings(plane, webhook_allow_private=False), resolve=fake_resolver("10.1.2.3"))
    with pytest.raises(UnsafeTarget, match="10.1.2.3"):
        rebound._pinned("https://hooks.example/in", {})
    sender.close()
    rebound.close()


@pytest.mark.parametrize("address, public", [
    ("93.184.215.14", True), ("2606:4700::1111", True), ("127.0.0.1", False), ("10.0.0.1", False),
    ("172.16.5.4", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("0.0.0.0", False), ("224.0.0.1", False), ("::1", False), ("fe80::1%eth0", False), ("fd00:ec2::254", False),
    ("::ffff:127.0.0.1", False), ("::ffff:8.8.8.8", True),
])
def test_which_addresses_are_public(address, public):
    assert is_public(address) is public


@pytest.mark.parametrize("url, why", [
    ("ftp://example.com/x", "https://"), ("https:///x", "no host"), ("https://u:p@example.com/x", "user name"),
    ("https://exa mple.com/", "spaces"), ("https://example.com:99999/", "not a valid URL"),
    ("http://localhost:8080/", "resolves to"), ("http://[::1]/", "resolves to"), ("http://2130706433/", "resolves to"),
])
def test_bad_or_private_urls_are_refused(url, why):
    with pytest.raises(UnsafeTarget, match=why):
        check_target(url, allow_private=False)
