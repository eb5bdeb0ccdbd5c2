"""A stopped run's resumable state served as the artifact `checkpoint.pt`.

Used by the task when a job is cancelled or capped, and by the reconciler when it cancels a
job whose worker died: either way the job lists the checkpoint it leaves.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dcl_core.files import link_or_copy_atomic, sha256_file

log = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint.pt"
"""A stopped run's resumable state, listed and served like its other files."""


def publish_checkpoint(run_dir: Path) -> list[tuple[str, int, str]]:
    """Put the run's `checkpoints/last.pt` at the top of the run dir as `checkpoint.pt` (where
    the API serves a job's artifacts from, by name) and return its (name, size, sha256); [] when
    the run wrote no checkpoint.

    A hard link: no copy of a checkpoint that may be gigabytes, and the engine only ever
    replaces last.pt by a rename, never rewrites it in place, so the served bytes keep matching
    their sha256. A copy where the file system has no hard links."""
    source = run_dir / "checkpoints" / "last.pt"
    if not source.is_file():
        return []
    target = run_dir / CHECKPOINT_ARTIFACT
    try:  # the partial file is hidden: never listed as an artifact
        link_or_copy_atomic(source, target)
        return [(CHECKPOINT_ARTIFACT, target.stat().st_size, sha256_file(target))]
    except OSError:  # the job still ends as it should; the checkpoint stays in checkpoints/
        log.warning("could not publish %s as %s", source, CHECKPOINT_ARTIFACT, exc_info=True)
        return []
