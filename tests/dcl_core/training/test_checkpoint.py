import errno
import hashlib
import os

import pytest
import torch

from dcl_core import files
from dcl_core.errors import UserError
from dcl_core.files import atomic_open
from dcl_core.training.checkpoint import load_checkpoint, save_checkpoint
from tests.fixtures.volumes import FailingWrites, tmpfs


def test_checkpoint_round_trips_tensors_and_reports_its_sha256(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 7, "config": "{}"}
    sha = save_checkpoint(path, state)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and torch.equal(loaded["model"]["w"], state["model"]["w"])


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})

    with pytest.raises(OSError), atomic_open(path) as f:
        f.write(b"partial")
        raise OSError("disk full")
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_arbitrary_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Payload()}, path)
    with pytest.raises(UserError, match="unreadable"):
        load_checkpoint(path)


def test_torn_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(UserError, match="delete it"):
        load_checkpoint(path)


def test_a_full_disk_is_an_enospc_oserror_naming_the_checkpoint(tmp_path, monkeypatch):
    # Issue 9, bug 8: torch.save turns ENOSPC into RuntimeError("... unexpected pos"), which the
    # worker could not recognise as a full disk.
    state = {"step": 3, "w": torch.zeros(1 << 20)}  # 4 MiB
    with tmpfs(tmp_path / "vol", 256 * 1024) as volume:
        if volume is None:  # no mounting here: the write fails as write(2) would on a full disk
            real_fdopen = os.fdopen
            monkeypatch.setattr(files.os, "fdopen", lambda *a, **k: FailingWrites(real_fdopen(*a, **k), 100_000))
            volume = tmp_path / "vol"
        path = volume / "checkpoints" / "last.pt"
        with pytest.raises(OSError) as caught:
            save_checkpoint(path, state)
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
        assert not path.exists() and list(path.parent.iterdir()) == []  # no temp file left
