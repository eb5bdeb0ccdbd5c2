"""What a training run reports, kept off the training thread: the loss of a logging window is
copied to the host without waiting and read one window later, and the hooks and metrics.jsonl
are called from one background thread, in order, each row once.

The queue is bounded (a slow job store slows training down instead of filling memory); `close`
delivers everything queued. When a hook raises (a lost lease), later rows are dropped, the gates
of checkpoints waiting for them are shut, and the error is raised in the training thread at its
next `check`.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any

import torch

from dcl_core.training.checkpoint_writer import Gate

MAX_QUEUED = 1024


class MetricsLog:
    """metrics.jsonl, one JSON object a line; on resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, keep_through_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        rows = []
        if path.exists() and keep_through_step > 0:
            rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= keep_through_step]
        path.write_text("".join(r + "\n" for r in rows))

    def append(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")


class HookThread:
    """The engine's hooks (`on_start`, `on_step`, `on_checkpoint`) and the metrics file, called
    from a background thread. `should_stop` stays with the caller (the training thread)."""

    def __init__(self, hooks, metrics_log: MetricsLog):
        self.hooks, self.metrics_log = hooks, metrics_log
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_QUEUED)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="run-log", daemon=True)
        self._thread.start()

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        self._queue.put(("start", total_steps, info))

    def row(self, metrics: dict[str, Any]) -> None:
        self._queue.put(("step", metrics))

    def on_checkpoint(self, path: Path, sha256: str) -> None:
        self._queue.put(("checkpoint", path, sha256))

    def open_after_queued(self, gate: Gate) -> None:
        """Open `gate` once everything queued before it is delivered (shut it if it never will be)."""
        self._queue.put(("gate", gate))

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self, raise_error: bool = True) -> None:
        self._queue.put(None)
        self._thread.join()
        if raise_error:
            self.check()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            kind = item[0]
            if kind == "gate":
                item[1].shut() if self._error is not None else item[1].open()
            elif self._error is None:
                try:
                    self._deliver(kind, item[1:])
                except BaseException as exc:  # the training thread raises it
                    self._error = exc

    def _deliver(self, kind: str, args: tuple) -> None:
        if kind == "start":
            self.hooks.on_start(*args)
        elif kind == "step":
            [metrics] = args
            self.metrics_log.append(metrics)
            self.hooks.on_step(metrics["step"], metrics)
        else:
            self.hooks.on_checkpoint(*args)


class LossReader:
    """A window's mean loss copied to (pinned) host memory without a sync; `read` waits for it,
    which a window later costs nothing: the GPU finished that step long ago."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self, loss_sum: torch.Tensor, window_steps: int):
        host = torch.empty((), dtype=loss_sum.dtype, pin_memory=self.cuda)
        host.copy_(loss_sum / window_steps, non_blocking=self.cuda)
        done = None
        if self.cuda:
            done = torch.cuda.Event()
            done.record()
        return host, done

    @staticmethod
    def read(handle) -> float:
        host, done = handle
        if done is not None:
            done.synchronize()
        return host.item()
