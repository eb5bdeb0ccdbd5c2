"""API latency under load while a job trains (issue 4: load).

    python benchmarks/api_load.py --clients 200 --seconds 20
    python benchmarks/api_load.py --url http://127.0.0.1:8000 --key KEY --clients 50

Without `--url` it starts its own stack in a temporary folder: uvicorn serving
`service.api.app` and `python -m worker`, every `DCL_` setting pointed there. It submits a
tiny pretrain job that outlasts the window (convnet_small on builtin:digits, many epochs),
waits until the job trains, loads the API, then cancels the job and stops both processes.
With `--url` it submits the same job to that service (it trains if a worker serves it).

The load, for `--seconds`:
  pollers      `--clients` of them, each every `--interval` s (random phase):
               GET /v1/jobs/{id}, then GET /v1/jobs/{id}/metrics?since=CURSOR
  streams      `--sse` clients hold GET /v1/jobs/{id}/events open the whole time
               (latency: until the response headers; reconnect with Last-Event-ID)

Latency is measured by the client, from sending a request to having read its whole body,
so it includes the client's own event loop (all clients share one process). An error is
any non-2xx answer, a timeout (`--timeout`) or a broken connection. Loopback only; every
client stops by itself at the deadline or after a bounded number of requests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
STATUS, METRICS, STREAM = "GET /v1/jobs/{id}", "GET /v1/jobs/{id}/metrics", "GET /v1/jobs/{id}/events"

TRAINING_JOB = {
    "type": "pretrain",
    "config": {
        "encoder": "convnet_small",
        "dataset": {"source": "builtin:digits", "image_size": 16},
        "batch_size": 64,
        "epochs": 10000,
        "lr": 0.05,
        "device": "cpu",
        "log_every_steps": 1,  # a metrics row every step: the store takes writes throughout
        "checkpoint_every_steps": 100,
    },
}
"""Far longer than any window: it is cancelled at the end."""


@dataclass
class Stats:
    """Latencies (seconds) and errors, by endpoint."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)
    events: int = 0
    lag: list[float] = field(default_factory=list)

    def error(self, endpoint: str, what: str) -> None:
        self.errors[endpoint] += 1
        self.samples.setdefault(what, endpoint)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of `values` (0 < q <= 100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def timed_get(client: httpx.AsyncClient, stats: Stats, endpoint: str, url: str, **kwargs) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await client.get(url, **kwargs)
    except httpx.HTTPError as exc:
        stats.error(endpoint, f"{type(exc).__name__}: {exc}")
        return None
    stats.latencies[endpoint].append(time.perf_counter() - started)
    if not response.is_success:
        stats.error(endpoint, f"HTTP {response.status_code}: {response.text[:200]}")
        return None
    return response


async def poller(client: httpx.AsyncClient, stats: Stats, job_id: str, deadline: float, interval_s: float) -> None:
    """Status and new metrics every `interval_s`, as a dashboard would."""
    await asyncio.sleep(random.uniform(0, interval_s))
    cursor = 0
    max_rounds = int(max(1.0, (deadline - time.monotonic())) / max(interval_s, 1e-3)) + 2
    for _ in range(max_rounds):
        if time.monotonic() >= deadline:
            return
        started = time.monotonic()
        await timed_get(client, stats, STATUS, f"/v1/jobs/{job_id}")
        response = await timed_get(client, stats, METRICS, f"/v1/jobs/{job_id}/metrics", params={"since": cursor})
        if response is not None:
            cursor = response.json()["next_since"]
        await asyncio.sleep(max(0.0, min(started + interval_s, deadline) - time.monotonic()))


async def streamer(client: httpx.AsyncClient, stats: Stats, job_id: str, deadline: float) -> None:
    """Hold the job's event stream open until the deadline, reconnecting where it left off."""
    state: dict = {"last_id": None, "done": False}
    for _ in range(100):  # reconnections: the server ends a stream after DCL_SSE_MAX_STREAM_SECONDS
        if state["done"] or time.monotonic() >= deadline:
            return
        try:
            await asyncio.wait_for(read_stream(client, stats, job_id, state), deadline - time.monotonic())
        except asyncio.TimeoutError:  # the deadline: a clean end
            return
        except httpx.HTTPError as exc:
            stats.error(STREAM, f"{type(exc).__name__}: {exc}")
            return


async def read_stream(client: httpx.AsyncClient, stats: Stats, job_id: str, state: dict) -> None:
    """One connection of an event stream; `state` carries the last event id and whether to stop."""
    headers = {"Last-Event-ID": state["last_id"]} if state["last_id"] else {}
    started = time.perf_counter()
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                             timeout=httpx.Timeout(None, connect=10)) as response:
        stats.latencies[STREAM].append(time.perf_counter() - started)
        if response.status_code != 200:
            stats.error(STREAM, f"HTTP {response.status_code}")
            state["done"] = True
            return
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                state["last_id"] = line[3:].strip()
            elif line.startswith("event:"):
                stats.events += 1
                if line[6:].strip() == "end":
                    state["done"] = True
                    return


async def loop_lag(stats: Stats, deadline: float, period_s: float = 0.01) -> None:
    """How late the clients' own event loop wakes up: a latency no server caused."""
    while time.monotonic() < deadline:
        started = time.perf_counter()
        await asyncio.sleep(period_s)
        stats.lag.append(time.perf_counter() - started - period_s)


async def load(url: str, headers: dict[str, str], job_id: str, clients: int, sse: int, seconds: float,
               interval_s: float, timeout_s: float) -> tuple[Stats, float]:
    """Every client has its own one-connection `AsyncClient`, as separate users would: one
    shared pool of hundreds of connections costs httpcore time linear in its size on every
    request, and the benchmark would measure its own client."""
    stats = Stats()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()  # one for all: each costs milliseconds to make
    async with AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout_s, verify=tls))
            for _ in range(clients + sse)]
        started = time.monotonic()
        deadline = started + seconds
        tasks = [poller(session, stats, job_id, deadline, interval_s) for session in sessions[:clients]]
        tasks += [streamer(session, stats, job_id, deadline) for session in sessions[clients:]]
        tasks.append(loop_lag(stats, deadline))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
    return stats, elapsed


def measure(*args) -> tuple[Stats, float]:
    """`load(*args)` on uvloop where it is installed, with the cyclic garbage collector off: this
    one process runs every client, and a full collection (~70 ms with hundreds of connections
    open) would stall them all and show up as server latency."""
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return run_loop(load(*args))
    finally:
        gc.enable()
        gc.unfreeze()


def table(stats: Stats, elapsed_s: float) -> str:
    rows = ["| endpoint | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    endpoints = sorted(set(stats.latencies) | set(stats.errors))
    for endpoint in endpoints:
        values = stats.latencies.get(endpoint, [])
        count = len(values) + (stats.errors[endpoint] if not values else 0)
        if values:
            p50, p95, p99, top = (percentile(values, q) * 1000 for q in (50, 95, 99, 100))
            cells = f"{p50:.1f} | {p95:.1f} | {p99:.1f} | {top:.1f}"
        else:
            cells = "- | - | - | -"
        rows.append(f"| {endpoint} | {count} | {count / elapsed_s:.1f} | {cells} | {stats.errors[endpoint]} |")
    every = [v for values in stats.latencies.values() for v in values]
    total_errors = sum(stats.errors.values())
    if every:
        p50, p95, p99, top = (percentile(every, q) * 1000 for q in (50, 95, 99, 100))
        rows.append(f"| all | {len(every)} | {len(every) / elapsed_s:.1f} | {p50:.1f} | {p95:.1f} | "
                    f"{p99:.1f} | {top:.1f} | {total_errors} |")
    return "\n".join(rows)


# ---- the stack under test -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(data_dir: Path, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCL_")}
    env.update(DCL_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def stop(proc: subprocess.Popen, group: bool = False) -> None:
    if proc.poll() is None:
        (os.killpg(proc.pid, signal.SIGTERM) if group else proc.terminate())
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            (os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill())
            proc.wait(10)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its children, from /proc."""
    total, pids = 0.0, [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        for p in pids:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    return total


def wait_for(predicate, timeout_s: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    raise SystemExit(f"{what} not within {timeout_s:.0f}s\n{tails}")


@contextmanager
def local_stack(data_dir: Path, worker_threads: int, worker_nice: int) -> Iterator[tuple[str, int]]:
    """uvicorn + `python -m worker` on `data_dir`; yields the API's URL and process id."""
    port = free_port()
    api_log, worker_log = data_dir / "api.log", data_dir / "worker.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(api_log, "wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.api.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--timeout-graceful-shutdown", "2"],
            cwd=REPO_ROOT, env=stack_env(data_dir, 1), stdout=out, stderr=subprocess.STDOUT)
    with open(worker_log, "wb") as out:
        nice = ["nice", "-n", str(worker_nice)] if worker_nice else []
        worker = subprocess.Popen([*nice, sys.executable, "-m", "worker", "--loglevel", "WARNING"], cwd=REPO_ROOT,
                                  env=stack_env(data_dir, worker_threads), stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), 60, "the API", [api_log])
        yield url, api.pid
    finally:
        stop(worker, group=True)
        stop(api)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run(args: argparse.Namespace, url: str, headers: dict[str, str], api_pid: int | None = None) -> int:
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        submitted = http.post("/v1/jobs", json=TRAINING_JOB)
        if submitted.status_code != 202:
            raise SystemExit(f"could not submit the training job: {submitted.status_code} {submitted.text}")
        job_id = submitted.json()["id"]
        try:
            if not args.no_wait_running:
                wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] > 0,
                         args.start_timeout, f"job {job_id} training", args.logs)
            before = http.get(f"/v1/jobs/{job_id}").json()
            cpu_before = cpu_seconds(api_pid) if api_pid else None
            client_cpu = time.process_time()
            stats, elapsed = measure(url, headers, job_id, args.clients, args.sse, args.seconds,
                                     args.interval, args.timeout)
            cpu_after = cpu_seconds(api_pid) if api_pid else None
            client_cpu = time.process_time() - client_cpu
            after = http.get(f"/v1/jobs/{job_id}").json()
        finally:
            http.post(f"/v1/jobs/{job_id}/cancel")
    print(f"{args.clients} pollers (status + metrics every {args.interval:g} s) and {args.sse} event streams "
          f"for {elapsed:.1f} s against {url}; job {job_id} {after['status']}, "
          f"step {before['progress']['step']} -> {after['progress']['step']}, "
          f"{stats.events} stream events received")
    if cpu_before is not None and cpu_after is not None:
        requests = sum(len(v) for v in stats.latencies.values())
        used = cpu_after - cpu_before
        print(f"API process CPU: {used:.1f} s ({100 * used / elapsed:.0f}% of a core), "
              f"{1000 * used / max(requests, 1):.2f} ms a request; clients' CPU: {100 * client_cpu / elapsed:.0f}% "
              f"of a core; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    if stats.lag:
        print(f"clients' event loop lag (latency the load generator added itself): "
              f"p50 {1000 * percentile(stats.lag, 50):.1f} ms, p99 {1000 * percentile(stats.lag, 99):.1f} ms")
    print()
    print(table(stats, elapsed))
    for what, endpoint in list(stats.samples.items())[:5]:
        print(f"\nerror ({endpoint}): {what}")
    return 1 if stats.errors else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running service (loopback only); default: start one here")
    p.add_argument("--key", default=os.environ.get("DCL_API_KEY"), help="API key for --url (default DCL_API_KEY)")
    p.add_argument("--clients", type=int, default=200, help="concurrent pollers (default 200)")
    p.add_argument("--sse", type=int, default=None, help="event streams held open (default clients // 10)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the load window (default 20)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between one poller's rounds (default 1)")
    p.add_argument("--timeout", type=float, default=10.0, help="a request slower than this is an error")
    p.add_argument("--worker-threads", type=int, default=1, help="torch threads of the local training worker")
    p.add_argument("--worker-nice", type=int, default=0,
                   help="run the local worker at this niceness (a CPU job stands in for a GPU one: "
                        "10 keeps its training off the API's CPU time)")
    p.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for the job to train")
    p.add_argument("--no-wait-running", action="store_true",
                   help="start the load at once, without waiting for the job to train")
    args = p.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.interval < 0:
        p.error("--clients must be >= 1, --seconds > 0 and --interval >= 0")
    args.sse = args.clients // 10 if args.sse is None else args.sse
    if args.url is not None and urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        p.error("--url must be a loopback address: this is a load generator")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    if args.url is not None:
        args.logs = []
        return run(args, args.url.rstrip("/"), headers)
    with tempfile.TemporaryDirectory(prefix="dcl-api-load-") as tmp:
        data_dir = Path(tmp) / "data"
        args.logs = [data_dir / "api.log", data_dir / "worker.log"]
        with local_stack(data_dir, args.worker_threads, args.worker_nice) as (url, api_pid):
            return run(args, url, headers, api_pid)


if __name__ == "__main__":
    sys.exit(main())
