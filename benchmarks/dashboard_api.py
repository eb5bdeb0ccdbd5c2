"""What the dashboard asks of the API at scale (issue 10): a page of 25 jobs out of 10,000,
and the loss curve of a job with 100,000 metric rows, full and thinned (`max_points`).

    python benchmarks/dashboard_api.py --jobs 10000 --rows 100000

Fills a fresh SQLite store in a temporary folder (directly, as workers would), starts uvicorn
on it, and times each request over real HTTP (median of `--repeat`, client-side, whole body
read). The full series is the reference the thinned one is compared with.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.control.clock import utcnow  # noqa: E402
from service.control.db import new_id  # noqa: E402
from service.control.settings import Settings  # noqa: E402
from service.control.tables import jobs as jobs_table  # noqa: E402
from tests.fixtures.control import open_plane, parse_spec  # noqa: E402
from tests.fixtures.servers import run_api_server  # noqa: E402


def fill(data_dir: Path, jobs: int, rows: int) -> str:
    spec = parse_spec({"type": "pretrain", "config": {"method": "dcl", "encoder": "resnet18", "batch_size": 256}})
    with open_plane(Settings(data_dir=data_dir, lease_seconds=3600)) as plane:
        now = utcnow()
        with plane.db.engine.begin() as conn:
            conn.execute(jobs_table.insert(), [
                dict(id=new_id("job"), owner="local", type="pretrain", status="succeeded",
                     spec=spec.model_dump(mode="json"), created_at=now, attempts=1, cancel_requested=False, step=100,
                     latest_metrics={"step": 100, "loss": 1.0})
                for _ in range(jobs - 1)])
        job = plane.lifecycle.submit("local", spec)
        plane.lifecycle.claim(job.id, "bench")
        series = [{"step": s, "loss": 2 - s / rows + 0.01 * math.sin(s), "lr": 0.1 * (1 - s / rows), "epoch": s / 200}
                  for s in range(1, rows + 1)]
        for start in range(0, rows, 10_000):
            plane.lifecycle.progress(job.id, "bench", start + 10_000, rows=series[start:start + 10_000])
    return job.id


def timed(client, path: str, repeat: int) -> tuple[float, int, int]:
    times, size, count = [], 0, 0
    for _ in range(repeat):
        started = time.perf_counter()
        r = client.get(path)
        times.append(time.perf_counter() - started)
        r.raise_for_status()
        size, count = len(r.content), len(r.json().get("items", []))
    return statistics.median(times), size, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dcl-dash-bench-") as folder:
        data_dir = Path(folder) / "data"
        data_dir.mkdir()
        job_id = fill(data_dir, args.jobs, args.rows)
        with run_api_server(data_dir) as api, api.client(timeout=300) as client:
            cases = [
                ("jobs page 1 (25 of all)", "/v1/jobs?limit=25"),
                ("jobs, last page", f"/v1/jobs?limit=25&offset={args.jobs - 25}"),
                ("metrics, max_points=2000", f"/v1/jobs/{job_id}/metrics?max_points=2000"),
                ("metrics, max_points=500", f"/v1/jobs/{job_id}/metrics?max_points=500"),
                ("metrics, full (reference)", f"/v1/jobs/{job_id}/metrics?limit=10000"),
            ]
            print(f"{args.jobs} jobs, {args.rows} metric rows in one job; median of {args.repeat}")
            print("| request | ms | rows | bytes |\n|---|---:|---:|---:|")
            for name, path in cases:
                seconds, size, count = timed(client, path, args.repeat)
                print(f"| {name} | {1000 * seconds:.0f} | {count} | {size} |")
            print("(full: the endpoint's limit is 10,000 rows a call; a client would page 10 times)")


if __name__ == "__main__":
    main()
