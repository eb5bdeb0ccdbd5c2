"""The HTTP side of the client: one `httpx.Client`, errors as `ApiError` with the service's own
message, checked downloads, and the event stream (read with httpx-sse, resumed with
Last-Event-ID after a cut)."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# httpx imports its own command line (click, rich and pygments, where installed: a fifth of a
# second) at import; this client never uses it, and `dcl status` should start quickly.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx  # noqa: E402
from httpx_sse import SSEError, connect_sse  # noqa: E402

from dcl_core.errors import UserError
from dcl_core.files import sha256_file
from service.client.records import Event

DEFAULT_URL = "http://127.0.0.1:8000"


def default_url() -> str:
    """DCL_URL, else the local service on DCL_PORT (the port `dcl serve` listens on), else :8000."""
    if os.environ.get("DCL_URL"):
        return os.environ["DCL_URL"]
    port = os.environ.get("DCL_PORT", "").strip()
    return f"http://127.0.0.1:{port}" if port else DEFAULT_URL


class ApiError(UserError):
    """The service refused a request: `status` (HTTP), `detail` (its message, naming the field and
    the fix) and `errors` (a 422's problems, each with its `field`)."""

    def __init__(self, message: str, status: int, detail: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.status, self.detail, self.errors = status, detail, errors or []


def check(response: httpx.Response) -> None:
    """ApiError for a 4xx or 5xx answer (read the body first when streaming)."""
    if response.status_code < 400:
        return
    errors: list[dict] = []
    try:
        body = response.json()
        detail, errors = body.get("detail"), body.get("errors") or []
    except (ValueError, AttributeError):
        detail = response.text[:500]
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    extra = ""
    if response.status_code == 429 and "retry-after" in response.headers:
        extra = f" (retry after {response.headers['retry-after']} s)"
    if response.status_code == 401:
        extra = " (pass --key or set DCL_API_KEY)"
    raise ApiError(f"{response.status_code} {response.reason_phrase}: {detail}{extra}", response.status_code,
                   detail, errors)


class Transport:
    """The connection: base URL and key (arguments, else DCL_URL and DCL_API_KEY), requests,
    downloads and event streams."""

    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 60.0):
        self.url = (url or default_url()).rstrip("/")
        key = key or os.environ.get("DCL_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise UserError(f"cannot reach the service at {self.url} ({exc}); start it with `dcl serve` "
                            "or pass --url / DCL_URL (or DCL_PORT for a local one)") from None
        check(response)
        return response

    def _json(self, method: str, path: str, **kwargs) -> Any:
        response = self.request(method, path, **kwargs)
        return None if response.status_code == 204 else response.json()

    # ---- files ---------------------------------------------------------------------------------

    def download(self, job_id: str, artifact: dict, out_dir: Path) -> Path:
        """One artifact (as listed: name, size, sha256, url) into `out_dir`, resumed with a Range
        request when a .part file is there, and checked against its sha256 before it takes its name."""
        out_dir = Path(out_dir)
        name = artifact["name"]
        target = out_dir / name  # a name may hold a folder (tensorboard/...), never ".."
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise UserError(f"refusing to write artifact {name!r} outside {out_dir}")
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        offset = part.stat().st_size if part.exists() else 0
        if offset >= artifact["size"]:
            part.unlink(missing_ok=True)
            offset = 0
        headers = {"Range": f"bytes={offset}-", "If-Range": f'"{artifact["sha256"]}"'} if offset else {}
        path = artifact.get("url") or f"/v1/jobs/{job_id}/artifacts/{name}"
        try:
            with self.http.stream("GET", path, headers=headers, timeout=httpx.Timeout(30, read=300)) as response:
                if response.status_code >= 400:
                    response.read()
                    check(response)
                with open(part, "ab" if response.status_code == 206 else "wb") as f:
                    for chunk in response.iter_bytes(1 << 20):
                        f.write(chunk)
                digest_header = response.headers.get("repr-digest", "")
        except httpx.TransportError as exc:
            raise UserError(f"download of {name} was cut ({exc}); run the command again to resume") from None
        expected = artifact["sha256"]
        if digest_header.startswith("sha-256=:") and \
                base64.b64decode(digest_header[len("sha-256=:"):-1]).hex() != expected:
            raise UserError(f"{name}: the server's Repr-Digest does not match the listed sha256")
        digest = sha256_file(part)
        if digest != expected:
            part.unlink(missing_ok=True)
            raise UserError(f"{name}: sha256 mismatch after download ({digest} != {expected}); "
                            "the partial file was removed, run the command again")
        os.replace(part, target)
        return target

    # ---- the event stream ------------------------------------------------------------------------

    def events(self, job_id: str, last_event_id: str | None = None, retries: int = 30) -> Iterator[Event]:
        """The job's events until its `end`: `metrics` rows, `status` and `end` (with the job).
        A cut stream (a restarted API, a proxy's time-out) is rejoined with Last-Event-ID: no
        metrics row is missed or repeated. `retries` failed reconnections in a row give up."""
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
            try:
                with connect_sse(self.http, "GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                 timeout=httpx.Timeout(30, read=120)) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        check(source.response)
                    for sse in source.iter_sse():
                        failures = 0
                        event = Event.parse(sse.event, sse.data, sse.id)
                        if event.event == "metrics" and event.id is not None:
                            last_event_id = event.id
                        yield event
                        if event.event == "end":
                            return
                time.sleep(0.5)  # the server ended the stream before the job ended: rejoin
            except SSEError as exc:
                raise UserError(f"{self.url} did not answer with an event stream ({exc}); is --url the service?") \
                    from None
            except httpx.TransportError as exc:
                failures += 1
                if failures > retries:
                    raise UserError(f"lost the event stream of {job_id} from {self.url}: {exc}") from None
                time.sleep(min(10.0, 0.5 * 2 ** min(failures, 5)))
