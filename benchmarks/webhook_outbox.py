"""What webhooks cost: a job's end with the outbox written in its transaction (0 hooks, the
reference, against 3 and 20), and how fast one dispatcher empties the outbox to a receiver on
127.0.0.1 (each delivery signed, POSTed, its attempt recorded), with a second receiver that hangs
until the time-out, to see it hold up one sender only.

    python benchmarks/webhook_outbox.py [--jobs 200] [--deliveries 200] [--database-url URL]

Prints ratios against the reference measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcl_core.jobs.pretrain import PretrainJob  # noqa: E402
from service.control.clock import FakeClock  # noqa: E402
from service.control.db import Database  # noqa: E402
from service.control.delivery import Deliverer  # noqa: E402
from service.control.plane import ControlPlane  # noqa: E402
from service.control.settings import Settings  # noqa: E402
from service.control.webhooks import EVENTS  # noqa: E402
from tests.fixtures.receiver import run_receiver  # noqa: E402

SPEC = PretrainJob.model_validate({"config": {"device": "cpu", "epochs": 1}})


def job_end_ms(plane: ControlPlane, owner: str, jobs: int) -> float:
    """Median ms of `lifecycle.succeed` (the transaction that also writes the outbox)."""
    times = []
    for _ in range(jobs):
        job = plane.lifecycle.submit(owner, SPEC)
        plane.lifecycle.claim(job.id, "w1")
        started = time.perf_counter()
        plane.lifecycle.succeed(job.id, "w1", {"scores": {"linear_top1": 0.9}})
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder; "
                        "PostgreSQL: a schema of its own, dropped at the end")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", webhook_allow_private=True, webhook_timeout_seconds=2)
        settings.ensure_dirs()
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        db = Database(url, schema=None if url.startswith("sqlite") else f"bench_webhooks_{os.getpid()}")
        plane = ControlPlane(settings, db=db)
        with run_receiver() as fast, run_receiver() as slow:
            for owner, hooks in (("none", 0), ("three", 3), ("twenty", 20)):
                for _ in range(hooks):
                    plane.webhooks.create(owner, fast.url, list(EVENTS))
            reference = job_end_ms(plane, "none", args.jobs)
            rows = [("0 hooks (reference)", reference)]
            rows += [(f"{n} hooks", job_end_ms(plane, owner, args.jobs)) for owner, n in (("three", 3), ("twenty", 20))]
            print(f"job end (lifecycle.succeed), median of {args.jobs}, {db.engine.dialect.name}:")
            for label, ms in rows:
                print(f"  {label:22s} {ms:7.2f} ms   x{ms / reference:.2f}")

            for owner in ("three", "twenty"):  # their deliveries go with them: only the next ones are sent
                for hook in plane.webhooks.list(owner):
                    plane.webhooks.delete(hook.id, owner)
            owner = "sender"
            plane.webhooks.create(owner, fast.url, list(EVENTS))
            for _ in range(args.deliveries):
                job = plane.lifecycle.submit(owner, SPEC)
                plane.lifecycle.claim(job.id, "w1")
                plane.lifecycle.succeed(job.id, "w1", {})
            hanging = plane.webhooks.create("hangs", slow.url, list(EVENTS))
            slow.answers = [("hang", 5)] * 10
            job = plane.lifecycle.submit("hangs", SPEC)
            plane.lifecycle.claim(job.id, "w1")
            plane.lifecycle.fail(job.id, "for the benchmark", worker="w1")
            sender = Deliverer(db, settings, clock=FakeClock(plane.clock.now()))
            started = time.perf_counter()
            sent = 0
            while sent < args.deliveries + 1:
                sent += len(sender.run_once())
            seconds = time.perf_counter() - started
            sender.close()
            print(f"dispatcher: {args.deliveries} deliveries to 127.0.0.1 plus 1 to a receiver that hangs past the "
                  f"2 s time-out: {seconds:.2f} s, {args.deliveries / seconds:.0f} deliveries/s; "
                  f"received {len(fast.received)}; the hanging one: "
                  f"{plane.webhooks.deliveries(hanging.id)[0][0].tries[0].error}")
        if db.schema is not None:
            db.drop()
        plane.close()


if __name__ == "__main__":
    main()
