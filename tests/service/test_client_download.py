"""`dcl download` writes an artifact named with a folder (tensorboard/...) under that folder, and
never outside the output folder."""

from __future__ import annotations

import pytest

from dcl_core.errors import UserError
from service.client import Client


@pytest.mark.parametrize("name", ["../escaped.bin", "tensorboard/../../escaped.bin", "/etc/escaped.bin"])
def test_artifact_names_cannot_leave_the_output_folder(tmp_path, name):
    with Client(url="http://127.0.0.1:9") as client:  # refused before any request
        with pytest.raises(UserError, match="outside"):
            client.download("job_x", {"name": name, "size": 1, "sha256": "0" * 64}, tmp_path / "out")
    assert not list(tmp_path.rglob("escaped.bin"))
