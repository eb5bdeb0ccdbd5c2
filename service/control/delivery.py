"""One pass of the webhook dispatcher: send each due delivery of the outbox once, signed, and
record how it went.

A delivery is a POST of the event's JSON with `X-DCL-Signature` (`service.signing`). A 2xx
answer delivers it; anything else (another status, a redirect, which is never followed, a
time-out, a refused target) is an attempt that failed, tried again after 10 s, 20 s, 40 s...
(DCL_WEBHOOK_RETRY_SECONDS doubling, at most DCL_WEBHOOK_RETRY_MAX_SECONDS apart) until
DCL_WEBHOOK_RETRY_FOR_SECONDS (24 h) after the event, then given up. A job is never waited on
or changed by its webhooks. Run by a thread in each worker's main process (worker/webhooks.py);
several dispatchers may run at once: each delivery is claimed by one.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx

from service.control.clock import SYSTEM, Clock
from service.control.db import Database
from service.control.egress import Resolve, UnsafeTarget, check_url, public_addresses
from service.control.webhooks import Claimed, WebhookRepo
from service.signing import HEADER, signature_header

log = logging.getLogger(__name__)

USER_AGENT = "dcl-service-webhooks/1"
BATCH = 32
"""Deliveries claimed a pass."""
PARALLEL = 4
"""Sent at once: one receiver that hangs holds up one sender, not the others."""


def next_attempt_at(created_at: datetime, attempt: int, now: datetime, settings) -> datetime | None:
    """When to try again after failed attempt number `attempt` (1, 2, ...); None: give up."""
    delay = min(settings.webhook_retry_max_seconds, settings.webhook_retry_seconds * 2 ** min(attempt - 1, 40))
    then = now + timedelta(seconds=delay)
    return then if then - created_at <= timedelta(seconds=settings.webhook_retry_for_seconds) else None


class Deliverer:
    """`lock` is held by each database call, and `hold_no_connection` closes the connection after
    it: a worker's main process forks jobs, and a fork must never copy a database connection in
    use (worker/forking.py). The sending itself holds neither."""

    def __init__(self, db: Database, settings, *, clock: Clock = SYSTEM, resolve: Resolve = socket.getaddrinfo,
                 lock: threading.RLock | None = None, hold_no_connection: bool = False):
        self.settings = settings
        self.clock = clock
        self.resolve = resolve
        self.repo = WebhookRepo(db, clock)
        self.lock = lock or threading.RLock()
        self.hold_no_connection = hold_no_connection
        self.pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="dcl-webhook")
        timeout = settings.webhook_timeout_seconds
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, pool=timeout), follow_redirects=False,
                                 trust_env=False, headers={"User-Agent": USER_AGENT})

    def close(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=not wait)
        if wait:
            self.http.close()

    def _db(self, call, *args, **kwargs):
        with self.lock:
            try:
                return call(*args, **kwargs)
            finally:
                if self.hold_no_connection:
                    self.repo.db.dispose()

    def run_once(self) -> list[tuple[str, str]]:
        """Claim what is due and send it; [(delivery id, its new state)]."""
        now = self.clock.now()
        hold = now + timedelta(seconds=self.settings.webhook_timeout_seconds * 3 + 30)
        claimed = [c for c in (self._db(self.repo.claim, i, now, hold) for i in self._db(self.repo.due, now, BATCH))
                   if c is not None]
        return list(self.pool.map(self._attempt, claimed))

    def _attempt(self, claimed: Claimed) -> tuple[str, str]:
        started = time.monotonic()
        status, error = self.send(claimed)
        at = self.clock.now()
        retry_at = None if error is None else next_attempt_at(claimed.created_at, claimed.attempt, at, self.settings)
        state = self._db(self.repo.record_attempt, claimed, at=at, status_code=status, error=error,
                         duration_ms=int(1000 * (time.monotonic() - started)), next_attempt_at=retry_at)
        if error is not None:
            log.info("webhook delivery %s attempt %d: %s (%s)", claimed.id, claimed.attempt, error, state)
        return claimed.id, state

    def send(self, claimed: Claimed) -> tuple[int | None, str | None]:
        """(status code, None) when the receiver took it, else (status code or None, what went wrong)."""
        body = claimed.payload.encode()
        headers = {"Content-Type": "application/json", HEADER: signature_header(claimed.secret, body),
                   "X-DCL-Event": claimed.type, "X-DCL-Delivery": claimed.id}
        try:
            url, extensions = self._pinned(claimed.url, headers)
            with self.http.stream("POST", url, content=body, headers=headers, extensions=extensions) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return status, None
                snippet = _first_bytes(response).decode("utf-8", "replace").strip()
        except UnsafeTarget as exc:
            return None, f"refused: {exc}"
        except httpx.TimeoutException:
            return None, f"timed out after {self.settings.webhook_timeout_seconds:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if 300 <= status < 400:
            return status, f"HTTP {status}: redirects are not followed; point the webhook at the final URL"
        return status, f"HTTP {status}" + (f": {snippet[:200]}" if snippet else "")

    def _pinned(self, url: str, headers: dict[str, str]) -> tuple[str, dict]:
        """The URL to connect to: its host replaced by the address just checked (with the name in
        Host and in TLS's server name), so a second lookup cannot lead anywhere else."""
        if self.settings.webhook_allow_private:
            check_url(url)
            return url, {}
        scheme, host, port = check_url(url)
        address = public_addresses(host, port, allow_private=False, resolve=self.resolve)[0]
        headers["Host"] = urlsplit(url).netloc  # check_url refused any user:password@
        target = httpx.URL(url).copy_with(host=address)
        return str(target), ({"sni_hostname": host} if scheme == "https" else {})

    def prune(self) -> int:
        keep = timedelta(days=self.settings.webhook_keep_days)
        return self._db(self.repo.prune, self.clock.now() - keep)


def _first_bytes(response: httpx.Response, limit: int = 1024) -> bytes:
    """At most `limit` bytes of the answer (a receiver's error text), never the whole of it."""
    out = b""
    try:
        for chunk in response.iter_raw():
            out += chunk
            if len(out) >= limit:
                break
    except httpx.HTTPError:
        pass
    return out[:limit]
