"""Settling a sweep: once every child is final, its table (`dcl_core.experiments.sweep.sweep_result`)
becomes the parent's result and its artifacts `results.json`, `results.csv` and (drawn by the
worker, which has matplotlib) `accuracy.png`.

Called by the worker after each child ends, by the reconciler every pass (for children that
ended without a worker: cancelled while queued, failed by the reconciler) and by the API
after a cancel. Idempotent: the files are the same for the same children, and
`store.settle_parent` is a compare-and-set, so of two callers settling at once one wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from dcl_core.files import sha256_file, write_bytes_atomic, write_json_atomic
from dcl_core.experiments.sweep import results_csv, sweep_result
from service.store import ACTIVE, JobStore

log = logging.getLogger(__name__)

Plot = Callable[[dict, Path], None]


def settle(store: JobStore, artifacts_dir: Path, parent_id: str, plot: Plot | None = None) -> bool:
    """Settle the parent if all its children are final; True when this call did it."""
    parent = store.get_job(parent_id)
    if parent is None or parent["status"] != "running":
        return False
    children = store.children(parent_id)
    if any(child["status"] in ACTIVE for child in children):
        return False
    result = sweep_result(list((parent["spec"] or {}).get("grid") or {}), children)
    run_dir = Path(artifacts_dir) / parent_id
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "results.json", result)
    write_bytes_atomic(run_dir / "results.csv", results_csv(result).encode())
    names = ["results.json", "results.csv"]
    if plot is not None:
        picture = run_dir / "accuracy.png"
        picture.unlink(missing_ok=True)
        try:
            plot(result, picture)
            names.append(picture.name)
        except Exception:  # the table is the result; a picture that fails must not lose it
            log.warning("sweep %s: could not draw %s", parent_id, picture.name, exc_info=True)
    artifacts = [(name, (run_dir / name).stat().st_size, sha256_file(run_dir / name)) for name in names]
    status = "cancelled" if parent["cancel_requested"] else "succeeded"
    settled = store.settle_parent(parent_id, status, result, artifacts)
    if settled:
        log.info("sweep %s %s: %d members", parent_id, status, len(children))
    return settled
