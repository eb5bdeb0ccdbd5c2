"""Progress of a fit in a notebook or a terminal (`tqdm.auto`: a widget where Jupyter's widgets
are, a text bar elsewhere), and Ctrl-C (a notebook's interrupt) turned into a clean stop: the
engine checkpoints at the next step and returns, and `fit` raises KeyboardInterrupt."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dcl_core.hooks import NullHooks


class FitProgress(NullHooks):
    """The engine's hooks for one fit: a bar with the loss, and the stop flag Ctrl-C sets."""

    def __init__(self, verbose: bool, description: str):
        self.verbose, self.description = bool(verbose), description
        self.bar = None
        self.interrupted = False

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        if not self.verbose:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=info["start_step"], unit="step", desc=self.description,
                        dynamic_ncols=True)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.bar is None:
            return
        shown = {"loss": f"{metrics['loss']:.4f}", "epoch": f"{metrics['epoch']:.2f}"}
        if "knn_acc" in metrics:
            shown["knn"] = f"{metrics['knn_acc']:.3f}"
        self.bar.set_postfix(shown, refresh=False)  # drawn by the update, with this step
        self.bar.update(step - self.bar.n)

    def should_stop(self) -> bool:
        return self.interrupted

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def stop_on_interrupt(progress: FitProgress) -> Iterator[None]:
    """While the block runs, the first Ctrl-C (SIGINT) asks the engine to stop after the current
    step, keeping a checkpoint; a second one interrupts at once. Only the main thread can take
    signals: elsewhere Ctrl-C keeps its usual meaning."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        if progress.interrupted:
            raise KeyboardInterrupt
        progress.interrupted = True
        print("\nstopping after this step (the checkpoint is kept; fit with warm_start=True resumes)",
              file=sys.stderr)

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        # None: a handler installed from C; the default one is the closest to it
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
