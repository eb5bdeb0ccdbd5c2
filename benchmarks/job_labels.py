"""What names, tags and scores cost the jobs list and the status poll (issue 17).

    python benchmarks/job_labels.py --jobs 10000 --repeat 5
    python benchmarks/job_labels.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Fills a fresh store (SQLite in a temporary folder, or a fresh PostgreSQL database) with `--jobs`
scored, named and tagged jobs, directly as workers would, starts uvicorn on it and times pages
of the list over real HTTP (median of `--repeat`, whole body read), each as a ratio to the plain
newest-first page. Then, in process: a page as `JobRepo.list` reads it (the page's ids sorted,
then their rows with their tags) against the whole rows sorted, as the list read before; and a
status read of one job (the row and its tags, one query) against the same read without tags.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import bindparam, select  # noqa: E402

from service.control.clock import utcnow  # noqa: E402
from service.control.db import new_id  # noqa: E402
from service.control.jobs import JOB_BY_ID, JOBS  # noqa: E402
from service.control.settings import Settings  # noqa: E402
from service.control.tables import job_tags, jobs as jobs_table  # noqa: E402
from tests.fixtures.control import open_plane, parse_spec  # noqa: E402
from tests.fixtures.servers import run_api_server  # noqa: E402
from tests.integration.helpers import postgres_database  # noqa: E402


def fill(settings: Settings, count: int) -> tuple[str, str]:
    """`count` jobs: half DCL, half SimCLR; a score on 80 %; "exp:0".."exp:9" on each, "keep"
    on every third; named "r18 seedN". Returns a job with 20 tags and one with 1."""
    rng = random.Random(0)
    specs = {m: parse_spec({"type": "pretrain", "config": {"method": m, "encoder": "resnet18"}}).model_dump(mode="json")
             for m in ("dcl", "simclr")}
    now = utcnow()
    rows, tags = [], []
    for i in range(count):
        job_id = new_id("job")
        rows.append(dict(id=job_id, owner="local", type="pretrain", status="succeeded", spec=specs[("dcl", "simclr")[i % 2]],
                         created_at=now, attempts=1, cancel_requested=False, step=100, name=f"r18 seed{i}",
                         score=rng.random() if rng.random() < 0.8 else None))
        tags += [{"job_id": job_id, "tag": f"exp:{i % 10}"}] + ([{"job_id": job_id, "tag": "keep"}] if i % 3 == 0 else [])
    tags += [{"job_id": rows[0]["id"], "tag": f"many:{t}"} for t in range(18)]
    with open_plane(settings) as plane, plane.db.engine.begin() as conn:
        for start in range(0, count, 2000):
            conn.execute(jobs_table.insert(), rows[start:start + 2000])
        for start in range(0, len(tags), 5000):
            conn.execute(job_tags.insert(), tags[start:start + 5000])
    return rows[0]["id"], rows[1]["id"]


def timed(call, repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server to make a fresh database on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dcl-labels-bench-") as folder, contextlib.ExitStack() as stack:
        data_dir = Path(folder) / "data"
        data_dir.mkdir()
        env = {}
        if args.database_url:
            env["DCL_DATABASE_URL"] = stack.enter_context(postgres_database(args.database_url))
        settings = Settings(data_dir=data_dir, **({"database_url": env["DCL_DATABASE_URL"]} if env else {}))
        tagged, typical = fill(settings, args.jobs)
        store = "PostgreSQL" if env else "SQLite"
        print(f"{args.jobs} jobs in {store}; median of {args.repeat} (ratio: to the plain page in the same run)\n")
        with run_api_server(data_dir, env=env) as api, api.client(timeout=300) as client:
            def get(path: str):
                return lambda: client.get(path).raise_for_status().json()

            cases = [
                ("newest first, 25 (reference)", "/v1/jobs?limit=25"),
                ("last page", f"/v1/jobs?limit=25&offset={args.jobs - 25}"),
                ("tag=exp:3 (10 % of jobs)", "/v1/jobs?limit=25&tag=exp:3"),
                ("tag=exp:3&tag=keep (all must match)", "/v1/jobs?limit=25&tag=exp:3&tag=keep"),
                ("q=seed1 (name substring)", "/v1/jobs?limit=25&q=seed1"),
                ("sort=-score", "/v1/jobs?limit=25&sort=-score"),
                ("method=simclr (spec JSON)", "/v1/jobs?limit=25&method=simclr"),
            ]
            get(cases[0][1])()  # warm up: the first request pays for imports and connections
            reference = timed(get(cases[0][1]), args.repeat)
            print("| request | ms | ratio |\n|---|---:|---:|")
            for name, path in cases:
                seconds = reference if path == cases[0][1] else timed(get(path), args.repeat)
                print(f"| {name} | {1000 * seconds:.1f} | {seconds / reference:.2f} |")
        with open_plane(settings) as plane:
            def query(statement):
                def run():
                    with plane.db.engine.connect() as conn:
                        conn.execute(statement).mappings().all()
                return run

            newest = (jobs_table.c.created_at.desc(), jobs_table.c.id.desc())
            print("\n| page of 25, the query alone | ms, ids first, with tags (now) | ms, whole rows sorted (before) "
                  "| ratio |\n|---|---:|---:|---:|")
            owned = jobs_table.c.owner == "local"
            for name, offset in (("first", 0), ("last", args.jobs - 25)):
                page = select(jobs_table.c.id).where(owned).order_by(*newest).limit(25).offset(offset)
                now = timed(query(JOBS.where(jobs_table.c.id.in_(page)).order_by(*newest)), args.repeat)
                then = timed(query(select(jobs_table).where(owned).order_by(*newest).limit(25).offset(offset)),
                             args.repeat)
                print(f"| {name} | {1000 * now:.1f} | {1000 * then:.1f} | {now / then:.2f} |")
            plain = select(jobs_table).where(jobs_table.c.id == bindparam("job_id"))
            reads = 500

            def read(statement, job_id):
                def run():
                    with plane.db.engine.connect() as conn:
                        for _ in range(reads):
                            conn.execute(statement, {"job_id": job_id}).mappings().first()
                return run

            print(f"\n| status read, in process (mean of {reads}) | us, row and tags (now) | us, row alone (before) "
                  "| ratio |\n|---|---:|---:|---:|")
            for name, job_id in (("a job with 1 tag", typical), ("a job with 20 tags", tagged)):
                without = timed(read(plain, job_id), args.repeat) / reads
                with_tags = timed(read(JOB_BY_ID, job_id), args.repeat) / reads
                print(f"| {name} | {1e6 * with_tags:.0f} | {1e6 * without:.0f} | {with_tags / without:.2f} |")


if __name__ == "__main__":
    main()
