"""A pretrain job on several devices: the worker's job process launches the run under torchrun
(one process a device, DDP: dcl_core.training.train gathers the negatives across them) and stays the
job's one voice to the job store.

    job process (holds the claim, the heartbeat, the cancel flag)
      └ torchrun --standalone --nproc-per-node N -m worker.distributed RUN_DIR/.job.json
          ├ rank 0: fit(...) with RankHooks: appends start/step/checkpoint events to .events.jsonl
          └ rank 1..N-1: fit(...)

The job process replays rank 0's events into its own hooks (progress, metrics, tracking), so
the job reports one progress. To stop (a cancel, the run time up), it creates `.stop`; rank 0
sees it at its next poll and broadcasts the decision, so every rank stops at the same step
(and checkpoints once, from rank 0). A failure a user can fix comes back in `.error.json`.
The dot files are not artifacts.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dcl_core.errors import UserError
from dcl_core.files import write_json_atomic

log = logging.getLogger(__name__)

JOB_FILE = ".job.json"
EVENTS_FILE = ".events.jsonl"
STOP_FILE = ".stop"
RESULT_FILE = ".result.json"
ERROR_FILE = ".error.json"
LOG_FILE = ".torchrun.log"
STOP_POLL_STEPS = 10  # ranks share the stop flag every this many steps (one tiny asynchronous collective)


# --------------------------------------------------------------------------- the job process


def run_distributed(config: dict, run_dir: Path, env, hooks, devices: int, *, poll_s: float = 0.2) -> dict:
    """Run a pretrain config on `devices` devices under torchrun; returns rank 0's run summary
    (`worker.runners.pretrain.run_summary`: steps, final metrics, warnings, evaluation, stopped)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in (EVENTS_FILE, STOP_FILE, RESULT_FILE, ERROR_FILE):
        (run_dir / name).unlink(missing_ok=True)
    write_json_atomic(run_dir / JOB_FILE, {
        "config": config, "run_dir": str(run_dir),
        "env": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(env).items()},
    })
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
           "-m", "worker.distributed", str(run_dir / JOB_FILE)]
    with open(run_dir / LOG_FILE, "ab") as output:
        proc = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
    log.info("torchrun on %d devices: pid %d, log %s", devices, proc.pid, run_dir / LOG_FILE)
    events = _EventTail(run_dir / EVENTS_FILE)
    stopping = False
    try:
        while True:
            done = proc.poll() is not None
            for event in events.read():
                _replay(event, hooks)
            if done:
                break
            if not stopping and hooks.should_stop():
                (run_dir / STOP_FILE).touch()
                stopping = True
            time.sleep(poll_s)
    except BaseException:  # a lost lease, the worker shutting down: the ranks must not go on alone
        _end(proc)
        raise
    if proc.returncode != 0:
        error = run_dir / ERROR_FILE
        if error.is_file():
            raise UserError(json.loads(error.read_text())["error"])
        raise RuntimeError(f"torchrun on {devices} devices exited with {proc.returncode}:\n"
                           f"{_tail(run_dir / LOG_FILE)}")
    return json.loads((run_dir / RESULT_FILE).read_text())


def _die_with_parent() -> None:
    """In the torchrun child before it starts: SIGTERM when the job process dies (killed, out of
    memory), so no rank goes on writing into a run folder whose job another worker now holds."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def _replay(event: dict, hooks) -> None:
    kind = event.get("event")
    if kind == "start":
        hooks.on_start(event["total_steps"], event["info"])
    elif kind == "step":
        hooks.on_step(event["step"], event["metrics"])
    elif kind == "checkpoint":
        hooks.on_checkpoint(Path(event["path"]), event["sha256"])


class _EventTail:
    """The complete lines appended to a file since the last read, as JSON."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# --------------------------------------------------------------------------- each rank


class RankHooks:
    """Rank 0 writes the engine's events for the job process; every STOP_POLL_STEPS polls the ranks
    share rank 0's stop flag (the engine polls once a step on every rank, so the ranks meet in the
    same collective). The broadcast is asynchronous and read at the next such poll, one window
    late: no rank waits on the device for it, and all ranks still stop at the same step."""

    def __init__(self, run_dir: Path, rank: int, device: str):
        self.run_dir, self.rank, self.device = run_dir, rank, device
        self.polls = 0
        self.stopped = False
        self._flag = None  # the flag broadcast at the previous window: (host copy, its copy's event)

    def _emit(self, event: dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.run_dir / EVENTS_FILE, "a") as f:
                f.write(json.dumps(event) + "\n")

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        self._emit({"event": "start", "total_steps": total_steps, "info": info})

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._emit({"event": "step", "step": step, "metrics": metrics})

    def on_checkpoint(self, path: Path, sha256: str) -> None:
        self._emit({"event": "checkpoint", "path": str(path), "sha256": sha256})

    def should_stop(self) -> bool:
        if self.stopped:
            return True
        self.polls += 1
        if self.polls % STOP_POLL_STEPS:
            return False
        if self._flag is not None:
            host, copied = self._flag
            if copied is not None:
                copied.synchronize()
            self.stopped = bool(host.item())
        if not self.stopped:
            self._flag = self._share_flag()
        return self.stopped

    def _share_flag(self):
        import torch
        import torch.distributed as dist

        cuda = self.device.startswith("cuda")
        flag = torch.tensor([1 if self.rank == 0 and (self.run_dir / STOP_FILE).exists() else 0], device=self.device)
        dist.broadcast(flag, src=0, async_op=True).wait()  # NCCL: the stream waits, not the host
        host = torch.empty(1, dtype=flag.dtype, pin_memory=cuda)
        host.copy_(flag, non_blocking=cuda)
        copied = None
        if cuda:
            copied = torch.cuda.Event()
            copied.record()
        return host, copied


def rank_main(job_file: str) -> int:
    """A torchrun process: join the group, train, and (rank 0) write the result or the error."""
    import torch.distributed as dist

    from dcl_core.cli import _init_distributed
    from dcl_core.config import TrainConfig
    from dcl_core.data.sources import DataEnv
    from dcl_core.training.train import fit
    from worker.runners.pretrain import run_summary

    payload = json.loads(Path(job_file).read_text())
    run_dir = Path(payload["run_dir"])
    device = _init_distributed() or "cpu"
    rank = dist.get_rank() if dist.is_initialized() else 0
    env = DataEnv(**{k: (Path(v) if k.endswith(("_dir", "_root")) and v else v) for k, v in payload["env"].items()})
    try:
        config = TrainConfig.model_validate({**payload["config"], "device": device})
        result = fit(config, run_dir, RankHooks(run_dir, rank, device), env)
    except UserError as exc:
        if rank == 0:
            write_json_atomic(run_dir / ERROR_FILE, {"error": str(exc)})
        return 3
    if rank == 0:
        write_json_atomic(run_dir / RESULT_FILE, run_summary(result))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(rank_main(sys.argv[1]))
