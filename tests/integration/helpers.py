"""What the end-to-end tests share: a tiny generated image dataset, an SSE reader, waits
on job states over HTTP, and the service stack (API + worker + broker + store) itself."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.fixtures.servers import (
    ApiServer,
    free_port,
    run_api_server,
    stop_process,
    wait_for_port,
)
from tests.fixtures.workers import FAST_WORKER_ENV, WorkerProcess, start_worker

TERMINAL = ("succeeded", "failed", "cancelled")

# Tiny: a convnet_small on 16-pixel images, a handful of steps.
TINY_PRETRAIN = {
    "encoder": "convnet_small",
    "batch_size": 16,
    "epochs": 1,
    "lr": 0.05,
    "device": "cpu",
    "log_every_steps": 1,
}


def image_zip(num_per_class: int = 24, size: int = 16, classes: tuple[str, ...] = ("disc", "bar"),
              seed: int = 0) -> bytes:
    """A zip of an image folder with one sub-folder per class: PNGs of a bright disc or a
    bright bar on noise, so the classes differ in a way an encoder can see."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for label, name in enumerate(classes):
            for i in range(num_per_class):
                image = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
                cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
                if label % 2 == 0:
                    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 4) ** 2
                else:
                    mask = np.abs(yy - cy) <= 1
                image[mask] = rng.integers(180, 255, size=3, dtype=np.uint8)
                png = io.BytesIO()
                Image.fromarray(image).save(png, format="PNG")
                archive.writestr(f"shapes/{name}/{i:03d}.png", png.getvalue())
    return buffer.getvalue()


def sse_events(client: httpx.Client, path: str, *, timeout_s: float = 120.0,
               headers: dict[str, str] | None = None) -> list[dict]:
    """Read a Server-Sent Events stream until its `end` event: [{event, id, data}]."""
    events: list[dict] = []
    current: dict = {}
    deadline = time.monotonic() + timeout_s
    with client.stream("GET", path, headers=headers or {}, timeout=httpx.Timeout(timeout_s)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no `end` event within {timeout_s}s; got {events[-3:]}")
            if not line:
                if current:
                    if "data" in current:
                        current["data"] = json.loads(current["data"])
                    events.append(current)
                    if current.get("event") == "end":
                        return events
                current = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            current[name] = current[name] + "\n" + value if name == "data" and name in current else value
    raise AssertionError(f"the event stream ended without an `end` event; got {events[-3:]}")


def wait_job(client: httpx.Client, job_id: str, statuses=TERMINAL, timeout_s: float = 120.0,
             until=None) -> dict:
    """Poll GET /v1/jobs/{id} until its status is one of `statuses` (and `until(job)` holds)."""
    deadline = time.monotonic() + timeout_s
    job: dict = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job.get("status") in statuses and (until is None or until(job)):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} not in {statuses} after {timeout_s}s: {job}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def redis_process(folder: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """A redis-server without persistence on a free port (never 6379)."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        import pytest

        pytest.skip("redis-server is not installed")
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"redis-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(folder)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 20, proc, log)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        stop_process(proc)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one stack, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = f"dcl_it_{secrets.token_hex(6)}"
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Stack:
    """API + worker + broker + job store, all real processes, sharing one data folder."""

    mode: str
    data_dir: Path
    env: dict[str, str]
    api: ApiServer
    workers: list[WorkerProcess] = field(default_factory=list)
    redis: dict = field(default_factory=dict)

    @property
    def worker(self) -> WorkerProcess:
        return self.workers[-1]

    def client(self) -> httpx.Client:
        return self.api.client()

    def start_worker(self, **kwargs) -> WorkerProcess:
        worker = start_worker(self.data_dir, env=self.env, **kwargs)
        self.workers.append(worker)
        return worker

    def settings(self):
        from service.control.settings import Settings

        values = {k[len("DCL_"):].lower(): v for k, v in self.env.items() if k.startswith("DCL_")
                  and not k.startswith("DCL_TEST_")}
        return Settings(data_dir=self.data_dir, **{k: v for k, v in values.items() if k != "data_dir"})

    def celery(self):
        from service.control.queue import make_celery

        return make_celery(self.settings())

    def plane(self):
        """A control plane on the stack's job store and broker (as a worker opens one); close it
        with `plane.close()`."""
        from service.control.plane import ControlPlane

        return ControlPlane(self.settings())

    def restart_redis(self, down_s: float = 1.0) -> None:
        """Stop the redis-server (no persistence: every queued message is lost) and start a
        fresh one on the same port."""
        self.stop_redis()
        time.sleep(down_s)
        self.start_redis()

    def stop_redis(self) -> None:
        stop_process(self.redis["process"])

    def start_redis(self) -> None:
        """A fresh redis-server on the port of the one `stop_redis` stopped."""
        context = redis_process(self.redis["folder"], port=self.redis["port"])
        _, self.redis["process"] = context.__enter__()
        self.redis["contexts"].append(context)

    def shutdown(self) -> None:
        """Stop the workers (all at once: a warm shutdown takes seconds), then the API."""
        for worker in self.workers:
            worker.terminate()
        self.api.stop()
        for worker in self.workers:
            worker.stop()

    def logs(self) -> str:
        parts = [f"--- API ---\n{self.api.output()}"]
        parts += [f"--- worker {i} ---\n{w.output()}" for i, w in enumerate(self.workers)]
        return "\n".join(parts)


@contextmanager
def service_stack(mode: str, root: Path, *, worker: bool = True, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """`mode`: sqlite (embedded SQLite broker and store), redis (a redis-server broker),
    postgres (embedded broker, PostgreSQL job store from DCL_TEST_POSTGRES_URL). `env`: more
    (or other) settings for the API and the workers."""
    data_dir = root / f"data-{mode}"
    env = {**FAST_WORKER_ENV, "DCL_SSE_POLL_SECONDS": "0.2", **(env or {})}
    with ExitStack() as stack:
        redis: dict = {}
        if mode == "redis":
            port = free_port()
            url, proc = stack.enter_context(redis_process(root / "redis", port=port))
            env["DCL_BROKER_URL"] = url
            redis = {"port": port, "process": proc, "folder": root / "redis", "contexts": []}
            stack.callback(lambda: [c.__exit__(None, None, None) for c in redis["contexts"]])
        elif mode == "postgres":
            admin = os.environ.get("DCL_TEST_POSTGRES_URL")
            if not admin:
                import pytest

                pytest.skip("DCL_TEST_POSTGRES_URL is not set")
            env["DCL_DATABASE_URL"] = stack.enter_context(postgres_database(admin))
        elif mode != "sqlite":
            raise ValueError(mode)
        api = stack.enter_context(run_api_server(data_dir, env=env))
        services = Stack(mode, data_dir, env, api, redis=redis)
        stack.callback(services.shutdown)
        if worker:
            services.start_worker()
        yield services
