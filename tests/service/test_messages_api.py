"""Error messages name what the user sent, never the server's folders or temporary files."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.service.conftest import image_zip

pytestmark = pytest.mark.integration


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("filename, data", [
    ("bad.npz", b"not an npz at all"),
    ("wrongtype.npz", npz_bytes(x=np.zeros((2, 8, 8, 3), dtype=np.float32))),
    ("nox.npz", npz_bytes(images=np.zeros((2, 8, 8, 3), dtype=np.uint8))),
    ("bad.zip", b"PK\x03\x04 truncated"),
    ("bad.tar.gz", b"\x1f\x8b garbage"),
])
def test_upload_errors_show_no_server_path_or_temporary_name(alice, api, filename, data):
    r = alice.post("/v1/datasets", files={"file": (filename, data, "application/octet-stream")})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert filename in detail
    for hidden in ("upload-", ".uploads", str(api.data_dir), str(api.data_dir.resolve()), "/tmp/"):
        assert hidden not in detail, detail


def test_truncated_zip_member_error_names_the_member_not_the_folder(alice, api, tmp_path):
    data = image_zip(tmp_path / "pets.zip").read_bytes()
    r = alice.post("/v1/datasets", files={"file": ("pets.zip", data[: len(data) // 2], "application/zip")})
    assert r.status_code == 422 and str(api.data_dir.resolve()) not in r.text and "upload-" not in r.text
