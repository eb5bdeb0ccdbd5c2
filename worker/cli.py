"""`dcl worker` / `python -m worker`: start a Celery worker for dcl jobs.

    python -m worker [--gpu N] [--queues gpu,cpu] [--concurrency N]

One worker process per GPU: `--gpu N` sets CUDA_VISIBLE_DEVICES=N before anything can
import torch (the job then sees its GPU as cuda:0). It runs up to `--concurrency`
(DCL_JOBS_PER_GPU, default 1) jobs at once on that GPU. Each job runs in a fresh child process
of the prefork pool (`worker_max_tasks_per_child=1`), so CUDA never initialises in the
main process. The main process also runs the reconciler (see worker/reconciler.py)
unless `--no-reconcile`, and the webhook dispatcher (worker/webhooks.py) unless `--no-webhooks`.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import socket
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu", type=int, default=None, metavar="N",
                        help="pin this worker to GPU N (sets CUDA_VISIBLE_DEVICES=N)")
    parser.add_argument("--gpus", default=None, metavar="LIST",
                        help="pin this worker to these GPUs (e.g. 0,1,2,3): it runs jobs asking for up to that "
                             "many under torchrun, holding its GPUs for each job")
    parser.add_argument("--queues", default=None,
                        help="comma-separated queues to consume (default: DCL_GPU_QUEUE,DCL_CPU_QUEUE, i.e. gpu,cpu)")
    parser.add_argument("--concurrency", type=int, default=None, metavar="N",
                        help="jobs run at once by this worker, each in its own process "
                             "(default DCL_JOBS_PER_GPU, 1 unless set)")
    parser.add_argument("--name", default=None,
                        help="Celery node name (default dcl-gpuN-PID@HOST or dcl-PID@HOST)")
    parser.add_argument("--loglevel", default=os.environ.get("DCL_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO, WARNING, ... (default INFO, or DCL_LOG_LEVEL)")
    parser.add_argument("--no-reconcile", action="store_true",
                        help="do not run the reconciler in this worker (another process runs it)")
    parser.add_argument("--no-webhooks", action="store_true",
                        help="do not send webhook deliveries from this worker (another worker sends them)")
    parser.add_argument("--no-preload", dest="preload", action="store_false",
                        help="do not import torch in the main process (each job's child then imports it)")
    parser.add_argument("--reconcile-interval", type=float, default=None, metavar="SECONDS",
                        help="seconds between reconciler passes (default: from lease and requeue settings)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker", description="Run a dcl Celery worker.")
    add_arguments(parser)
    return parser


def use_compile_cache(settings) -> None:
    """Point torch.compile's persistent caches (Inductor's FX graph and AOT autograd caches,
    Triton's kernels: all under TORCHINDUCTOR_CACHE_DIR) at the worker's volume; every job
    process inherits it. An operator's own TORCHINDUCTOR_CACHE_DIR wins."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(settings.compile_cache_dir))


def run(args: argparse.Namespace) -> int:
    if args.gpu is not None:
        if args.gpu < 0:
            print("error: --gpu must be >= 0", file=sys.stderr)
            return 2
        if "torch" in sys.modules:  # too late to pin: CUDA may already have been set up
            print("warning: torch was imported before --gpu was applied", file=sys.stderr)
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    gpus = 1
    if args.gpus is not None:
        if args.gpu is not None:
            print("error: give --gpu N or --gpus LIST, not both", file=sys.stderr)
            return 2
        ids = [g.strip() for g in args.gpus.split(",") if g.strip()]
        if not ids or not all(g.isdigit() for g in ids) or len(set(ids)) != len(ids):
            print("error: --gpus must list distinct GPU numbers, e.g. 0,1,2,3", file=sys.stderr)
            return 2
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
        gpus = len(ids)
    if args.concurrency is not None and args.concurrency < 1:
        print("error: --concurrency must be >= 1", file=sys.stderr)
        return 2

    # `kill -USR2 PID` prints every thread's stack (the main process or a job's child).
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    logging.basicConfig(
        level=getattr(logging, str(args.loglevel).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s",
    )
    # Imported only now: CUDA_VISIBLE_DEVICES is set before anything could load torch.
    from service.control.settings import get_settings
    from worker.app import app
    from worker.forking import guard_sqlalchemy_broker, install_fork_guards
    from worker import shutdown
    from worker.reconciler import Reconciler
    from worker.webhooks import WebhookDispatcher

    settings = get_settings()
    settings.ensure_dirs()
    use_compile_cache(settings)
    if args.concurrency is None:
        args.concurrency = settings.jobs_per_gpu
    if args.preload:
        # Jobs start seconds sooner: children fork with torch loaded. CUDA stays
        # uninitialised here (only a job's child touches the GPU).
        from worker.runners import preload

        facts = preload()
        if facts["cuda_initialized"]:
            print("error: CUDA was initialised in the worker's main process", file=sys.stderr)
            return 1
        logging.getLogger("worker").info("engine preloaded (torch %s, CUDA not initialised)", facts["torch"])
        from worker.tracking import preload as preload_tracking

        preload_tracking(settings)
    from service.control.queue import device_queues

    cpus = settings.worker_cpu_devices
    queues = args.queues or ",".join(device_queues(settings.gpu_queue, gpus) + device_queues(settings.cpu_queue, cpus))
    queues = ",".join(q.strip() for q in queues.split(",") if q.strip())
    pid, host = os.getpid(), socket.gethostname()
    name = args.name or (f"dcl-gpu{args.gpu}-{pid}@{host}" if args.gpu is not None else f"dcl-{pid}@{host}")

    # Records this worker as seen (for /readyz) and, unless --no-reconcile, re-sends lost jobs.
    reconciler = Reconciler(
        settings, app, interval_s=args.reconcile_interval, reconcile_jobs=not args.no_reconcile,
        worker_info={"node": name, "queues": queues, "gpu": args.gpu, "gpus": gpus, "cpu_devices": cpus,
                     # Whether this machine has an NVIDIA GPU at all (the dashboard's defaults read
                     # it); from /dev, not torch: CUDA must stay uninitialised in this process.
                     "cuda": any(Path("/dev").glob("nvidia[0-9]*")),
                     "concurrency": args.concurrency,
                     "pid": pid},
    ).start()
    # Sends webhook deliveries (the outbox the lifecycle writes when a job ends).
    dispatcher = None if args.no_webhooks else WebhookDispatcher(settings).start()
    shutdown.arm()  # before the pool forks: its job processes must share the flag
    install_fork_guards([reconciler.pass_lock] + ([dispatcher.pass_lock] if dispatcher else [])
                        + [guard_sqlalchemy_broker()])
    argv = [
        "worker",
        f"--hostname={name}",
        f"--queues={queues}",
        f"--concurrency={args.concurrency}",
        "--pool=prefork",
        "--max-tasks-per-child=1",
        "--prefetch-multiplier=1",
        f"--loglevel={args.loglevel}",
        # No broadcast traffic: the embedded SQLite broker has no fanout, and the job
        # store (not Celery events) says which workers are alive.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    try:
        app.worker_main(argv)
    finally:
        reconciler.stop()
        reconciler.last_pass()
        if dispatcher is not None:
            dispatcher.stop()
    return 0


def _command(args: argparse.Namespace) -> int:
    return run(args)


def register(subparsers) -> None:
    """Entry point of the `dcl.commands` group: adds `dcl worker`."""
    parser = subparsers.add_parser("worker", help="run a Celery worker that trains the service's jobs",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=_command)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
