"""Tracking sinks: more implementations of the engine's hooks, composed with the one that runs
the job (DESIGN.md). A sink only listens: it never decides when to stop, and its failure never
fails the run (it is logged, and a sink that failed once is switched off).

A sink may also have `close(outcome)`, called once after the run with what it produced
(`{"status": ..., "result": {...}, "step": N}`), to flush what it buffered.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
"""The run folder's sub-folder of TensorBoard event files: `tensorboard --logdir DIR/tensorboard`."""


class TensorBoardHooks:
    """Every metric of `on_step` as a TensorBoard scalar under `run_dir/tensorboard/`.

    The writer is opened at the first step (a run that never steps leaves no folder). On a
    resume a new event file joins the folder; TensorBoard reads them as one run.
    """

    def __init__(self, run_dir: Path):
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self._writer = None

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        pass

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=30)
        for name, value in metrics.items():
            if name != "step" and _is_number(value):
                self._writer.add_scalar(name, float(value), global_step=int(step))

    def should_stop(self) -> bool:
        return False

    def on_checkpoint(self, path: Path, sha256: str) -> None:
        if self._writer is not None:
            self._writer.flush()  # what a resume keeps is on disk too

    def close(self, outcome: dict[str, Any] | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class SinkHooks:
    """`primary` (the hooks that run the job) followed by `sinks` (listeners).

    The primary's calls and answers are the run's: its exceptions propagate (a lost lease
    must still unwind the engine). A sink's exception is logged and that sink is dropped.
    Attributes not defined here are the primary's (`stop_reason`, `step`...).
    """

    def __init__(self, primary, sinks: list):
        self.primary = primary
        self.sinks = list(sinks)

    def __getattr__(self, name: str):
        if name == "primary":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.primary, name)

    def _each(self, method: str, *args) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args)
            except Exception:
                log.warning("tracking sink %s failed in %s; it is switched off for this run",
                            type(sink).__name__, method, exc_info=True)
                self.sinks.remove(sink)
                _close_quietly(sink, None)

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        self.primary.on_start(total_steps, info)
        self._each("on_start", total_steps, info)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.primary.on_step(step, metrics)
        self._each("on_step", step, metrics)

    def should_stop(self) -> bool:
        return self.primary.should_stop()

    def on_checkpoint(self, path: Path, sha256: str) -> None:
        self.primary.on_checkpoint(path, sha256)
        self._each("on_checkpoint", path, sha256)

    def close(self, outcome: dict[str, Any] | None = None) -> None:
        """Close every sink (in order), each failure logged only."""
        for sink in self.sinks:
            _close_quietly(sink, outcome)
        self.sinks = []


def _close_quietly(sink, outcome) -> None:
    close = getattr(sink, "close", None)
    if close is None:
        return
    try:
        close(outcome)
    except Exception:
        log.warning("tracking sink %s failed to close", type(sink).__name__, exc_info=True)
