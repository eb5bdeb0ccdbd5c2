"""A small HTTP client for the service (httpx), used by `dcl submit/status/wait/download/jobs`.

Errors come back as `UserError` with the service's own message, so the CLI prints them as
it prints any other bad input.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx

from dcl_core.errors import UserError
from dcl_core.files import sha256_file

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass
class Event:
    event: str
    data: Any
    id: str | None = None


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-Sent Events from a line iterator (comments and retry fields skipped)."""
    event, data, id_ = "message", [], None
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    payload = json.loads(text)
                except ValueError:
                    payload = text
                yield Event(event, payload, id_)
            event, data, id_ = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            id_ = value


class Client:
    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 60.0):
        self.url = (url or os.environ.get("DCL_URL") or DEFAULT_URL).rstrip("/")
        key = key or os.environ.get("DCL_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise UserError(f"cannot reach the service at {self.url} ({exc}); start it with `dcl serve` "
                            "or pass --url / DCL_URL") from None
        check(response)
        return response

    # ---- resources --------------------------------------------------------------------

    def submit(self, body: dict) -> dict:
        return self.request("POST", "/v1/jobs", json=body).json()

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/v1/jobs/{job_id}").json()

    def jobs(self, status: str | None = None, type: str | None = None, limit: int = 50, offset: int = 0,
             parent: str | None = None) -> dict:
        params = {k: v for k, v in dict(status=status, type=type, limit=limit, offset=offset,
                                        parent=parent).items() if v is not None}
        return self.request("GET", "/v1/jobs", params=params).json()

    def list_jobs(self, *, limit: int = 50, offset: int = 0, tag: list[str] | None = None, **filters) -> dict:
        """A page of jobs: `tag` (all must match), `q`, `status`, `type`, `method`, `encoder`,
        `dataset`, `parent`, `sort` (created, -created, score, -score); None leaves a filter out."""
        params = [(k, v) for k, v in dict(limit=limit, offset=offset, **filters).items() if v is not None]
        params += [("tag", t) for t in tag or []]
        return self.request("GET", "/v1/jobs", params=params).json()

    def update_job(self, job_id: str, **changes) -> dict:
        """Change a job's `name`, `notes` (None clears them), `tags` (replaces them), `add_tags`, `remove_tags`."""
        return self.request("PATCH", f"/v1/jobs/{job_id}", json=changes).json()

    def cancel(self, job_id: str) -> dict:
        return self.request("POST", f"/v1/jobs/{job_id}/cancel").json()

    def retry(self, job_id: str) -> dict:
        return self.request("POST", f"/v1/jobs/{job_id}/retry").json()

    def upload(self, path: Path, name: str | None = None) -> dict:
        with open(path, "rb") as f:
            files = {"file": (path.name, f, "application/octet-stream")}
            data = {"name": name} if name else None
            return self.request("POST", "/v1/datasets", files=files, data=data, timeout=None).json()

    def datasets(self, limit: int = 100, offset: int = 0) -> dict:
        return self.request("GET", "/v1/datasets", params={"limit": limit, "offset": offset}).json()

    def metrics(self, job_id: str, since: int = 0, limit: int = 1000) -> dict:
        return self.request("GET", f"/v1/jobs/{job_id}/metrics", params={"since": since, "limit": limit}).json()

    def neighbours(self, job_id: str, item: int, k: int = 10) -> dict:
        return self.request("GET", f"/v1/jobs/{job_id}/neighbours", params={"item": item, "k": k}).json()

    def search(self, job_id: str, image: Path, k: int = 10) -> dict:
        """The embed job's k images nearest to an image file (embedded on the server: seconds)."""
        with open(image, "rb") as f:
            return self.request("POST", f"/v1/jobs/{job_id}/search", params={"k": k},
                                files={"file": (image.name, f, "application/octet-stream")}, timeout=120).json()

    def artifacts(self, job_id: str) -> list[dict]:
        return self.request("GET", f"/v1/jobs/{job_id}/artifacts").json()["items"]

    def events(self, job_id: str, last_event_id: str | None = None, retries: int = 30) -> Iterator[Event]:
        """The job's event stream until its `end` event; reconnects (with Last-Event-ID) when cut."""
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                      timeout=httpx.Timeout(30, read=120)) as response:
                    if response.status_code >= 400:
                        response.read()
                        check(response)
                    for event in parse_sse(response.iter_lines()):
                        failures = 0
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
                        if event.event == "end":
                            return
                time.sleep(0.5)  # the server ended the stream before the job ended: reconnect
            except httpx.TransportError as exc:
                failures += 1
                if failures > retries:
                    raise UserError(f"lost the event stream of {job_id} from {self.url}: {exc}") from None
                time.sleep(min(10.0, 0.5 * 2 ** min(failures, 5)))

    def download(self, job_id: str, artifact: dict, out_dir: Path) -> Path:
        """One artifact into out_dir, resumed with a Range request when a .part file exists,
        and checked against its sha256 before it takes its name."""
        target = out_dir / artifact["name"]  # a name may hold a folder (tensorboard/...), never ".."
        if ".." in Path(artifact["name"]).parts or Path(artifact["name"]).is_absolute():
            raise UserError(f"refusing to write artifact {artifact['name']!r} outside {out_dir}")
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        offset = part.stat().st_size if part.exists() else 0
        if offset >= artifact["size"]:
            part.unlink(missing_ok=True)
            offset = 0
        headers = {}
        if offset:
            headers = {"Range": f"bytes={offset}-", "If-Range": f'"{artifact["sha256"]}"'}
        path = f"/v1/jobs/{job_id}/artifacts/{artifact['name']}"
        try:
            with self.http.stream("GET", path, headers=headers, timeout=httpx.Timeout(30, read=300)) as response:
                if response.status_code >= 400:
                    response.read()
                    check(response)
                mode = "ab" if response.status_code == 206 else "wb"
                with open(part, mode) as f:
                    for chunk in response.iter_bytes(1 << 20):
                        f.write(chunk)
                digest_header = response.headers.get("repr-digest", "")
        except httpx.TransportError as exc:
            raise UserError(f"download of {artifact['name']} was cut ({exc}); run the command again to resume") from None
        digest = sha256_file(part)
        expected = artifact["sha256"]
        if digest_header.startswith("sha-256=:"):
            expected_header = base64.b64decode(digest_header[len("sha-256=:"):-1]).hex()
            if expected_header != expected:
                raise UserError(f"{artifact['name']}: the server's Repr-Digest does not match the listed sha256")
        if digest != expected:
            part.unlink(missing_ok=True)
            raise UserError(f"{artifact['name']}: sha256 mismatch after download ({digest} != {expected}); "
                            "the partial file was removed, run the command again")
        os.replace(part, target)
        return target



def check(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:500]
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    extra = ""
    if response.status_code == 429 and "retry-after" in response.headers:
        extra = f" (retry after {response.headers['retry-after']} s)"
    if response.status_code == 401:
        extra = " (pass --key or set DCL_API_KEY)"
    raise UserError(f"{response.status_code} {response.reason_phrase}: {detail}{extra}")
