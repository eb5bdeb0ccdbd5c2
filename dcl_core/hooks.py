"""How the engine talks to whoever runs it (the CLI, a worker, a test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol


class Hooks(Protocol):
    """Training calls `on_start`, `on_step` and `on_checkpoint` from one background thread, in
    order (dcl_core.training.run_log), and `should_stop` from the training thread; an exception
    from the first three is raised in the training thread at its next step."""

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        """Called once before the first step (also on resume), with the run's size."""

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        """Called every `log_every_steps` steps and at epoch ends. `step` counts from 1."""

    def should_stop(self) -> bool:
        """Polled every few steps; True stops the run cleanly (a checkpoint is kept)."""

    def on_checkpoint(self, path: Path, sha256: str) -> None:
        """Called after a resumable checkpoint was written atomically."""


class StopRequested(Exception):
    """Raised by an engine function that has no partial result to hand back (a probe, an
    embedding) once `hooks.should_stop()` said True; training returns instead (stopped=True)."""


def stop_check(hooks) -> Callable[[], None]:
    """A function that raises StopRequested when `hooks.should_stop()` says so: called between
    batches and iterations by the probe and embed loops."""

    def check() -> None:
        if hooks.should_stop():
            raise StopRequested

    return check


class NullHooks:
    """Hooks that do nothing; subclass and override what you need."""

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        pass

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def on_checkpoint(self, path: Path, sha256: str) -> None:
        pass
