"""Files written atomically get the mode a plain open() would give them (0644 under the usual
umask), not mkstemp's 0600: `dcl embed`'s .npy files, encoders, JSON results."""

from __future__ import annotations

import os
import stat

from dcl_core.files import atomic_open, write_json_atomic


def test_atomic_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "features.npy") as f:
            f.write(b"x")
        write_json_atomic(tmp_path / "probe.json", {"accuracy": 0.9})
        os.umask(0o077)
        with atomic_open(tmp_path / "private.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert (mode("features.npy"), mode("probe.json"), mode("private.bin")) == (0o644, 0o644, 0o600)
