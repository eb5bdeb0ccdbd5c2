"""One `dcl serve` per data folder: the first holds an exclusive lock on `serve.lock` in it for
its whole life (the kernel drops it when the process ends, however it ends), and writes its pid
there so a second one can say who holds it. Two embedded workers on one folder's SQLite broker
race to create its tables, and each server would supervise a worker the other cannot see."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from dcl_core.errors import UserError

LOCK_NAME = "serve.lock"


def lock_data_dir(data_dir: Path) -> IO:
    """Hold the folder's lock (keep the returned file open), or raise UserError naming the holder."""
    handle = open(Path(data_dir) / LOCK_NAME, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"another `dcl serve` (pid {holder}) is using the data folder {data_dir}: stop it first, "
                        "or give this one its own folder (DCL_DATA_DIR)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
