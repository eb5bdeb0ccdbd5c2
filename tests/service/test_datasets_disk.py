"""/v1/datasets on a full or read-only datasets volume (a real small tmpfs, remounted
read-only): the server's disk is answered with 507/503 and what to do, never a 500 or a 4xx
that blames the upload, and a dataset's row never outlives or is outlived by its files."""

from __future__ import annotations

import errno
import io
import zipfile

import pytest
from PIL import Image

from dcl_core.data import stored
from dcl_core.errors import UserError
from tests.fixtures.servers import run_api_server
from tests.fixtures.volumes import remount, tmpfs
from tests.service.conftest import image_zip

pytestmark = pytest.mark.integration

VOLUME_BYTES = 1 << 20


def flat_bmp_zip(path, count: int, side: int = 300):
    """`count` flat BMPs of side x side (270 KB each) that deflate to almost nothing."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(count):
            buf = io.BytesIO()
            Image.new("RGB", (side, side), (i, 0, 0)).save(buf, "BMP")
            zf.writestr(f"cls/{i}.bmp", buf.getvalue())
    return path


@pytest.fixture
def volume(tmp_path):
    with tmpfs(tmp_path / "datasets", VOLUME_BYTES) as mounted:
        if mounted is None:
            pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN); "
                        "test_extraction_that_fills_the_volume_is_not_blamed_on_the_archive covers the logic")
        yield mounted


@pytest.fixture
def server(tmp_path, volume):
    env = {"DCL_DATASETS_DIR": str(volume), "DCL_MAX_UPLOAD_BYTES": str(4 * VOLUME_BYTES)}
    with run_api_server(tmp_path / "data", env=env) as api, api.client() as client:
        yield client


def upload(client, path):
    with open(path, "rb") as f:
        return client.post("/v1/datasets", files={"file": (path.name, f, "application/zip")})


def contents(volume) -> list[str]:
    return sorted(p.relative_to(volume).as_posix() for p in volume.rglob("*") if p.is_file())


def test_a_zip_that_fills_the_volume_while_extracting_is_507_and_leaves_nothing(server, volume, tmp_path):
    bombish = flat_bmp_zip(tmp_path / "flat.zip", 8)  # ~2.2 MB unpacked on a 1 MiB volume
    assert bombish.stat().st_size < 100_000
    r = upload(server, bombish)
    assert r.status_code == 507, r.text
    detail = r.json()["detail"]
    assert "full" in detail and "DCL_DATASETS_DIR" in detail and "damaged" not in detail
    assert str(volume) not in detail  # no server paths
    assert contents(volume) == [] and server.get("/v1/datasets").json()["total"] == 0
    # Space is back: a small upload works.
    assert upload(server, image_zip(tmp_path / "pets.zip")).status_code == 201


def test_an_upload_larger_than_the_free_space_is_507(server, volume, tmp_path):
    import os

    big = tmp_path / "noise.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("cls/noise.png", os.urandom(2 * VOLUME_BYTES))
    r = upload(server, big)
    assert r.status_code == 507 and "full" in r.json()["detail"], r.text
    assert contents(volume) == []


def test_a_read_only_volume_refuses_uploads_and_deletes_with_503_and_keeps_row_and_files(server, volume, tmp_path):
    ds = upload(server, image_zip(tmp_path / "pets.zip")).json()
    files_before = contents(volume)
    remount(volume, read_only=True)
    try:
        r = upload(server, image_zip(tmp_path / "more.zip"))
        assert r.status_code == 503 and "read-only" in r.json()["detail"], r.text
        r = server.delete(f"/v1/datasets/{ds['id']}")
        assert r.status_code == 503 and "not deleted" in r.json()["detail"], r.text
        assert server.get(f"/v1/datasets/{ds['id']}").status_code == 200
        assert contents(volume) == files_before
    finally:
        remount(volume, read_only=False)
    assert server.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert server.get(f"/v1/datasets/{ds['id']}").status_code == 404
    assert contents(volume) == []


def test_extraction_that_fills_the_volume_is_not_blamed_on_the_archive(tmp_path, monkeypatch):
    """The same without a mount: the write fails with ENOSPC at the OS call."""
    src = image_zip(tmp_path / "pets.zip")
    real_open = open

    def full_disk_open(path, mode="r", *args, **kwargs):
        if "x" in mode or "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk_open)
    with pytest.raises(OSError) as caught:
        stored.store_dataset(src, tmp_path / "ds_1", filename="pets.zip", max_total_bytes=1 << 30, max_files=100)
    assert caught.value.errno == errno.ENOSPC and not isinstance(caught.value, UserError)
    assert not (tmp_path / "ds_1").exists()
