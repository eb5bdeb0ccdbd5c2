"""/v1/datasets over real HTTP: uploads streamed with a cap, unsafe archives refused,
nothing half-made registered, owners see only their own."""

from __future__ import annotations

import io
import os
import socket
import time
import zipfile

import numpy as np
import pytest

from tests.fixtures.servers import run_api_server
from tests.service.conftest import ALICE, image_zip, make_zip, png_bytes

pytestmark = pytest.mark.integration


def upload(client, path, **params):
    with open(path, "rb") as f:
        return client.post("/v1/datasets", files={"file": (path.name, f, "application/zip")}, params=params)


def leftovers(api) -> list[str]:
    uploads = api.data_dir / "datasets" / ".uploads"
    return sorted(os.listdir(uploads)) if uploads.exists() else []


def dataset_dirs(api) -> set[str]:
    return {p.name for p in (api.data_dir / "datasets").iterdir() if p.name.startswith("ds_")}


def test_upload_zip_returns_its_summary(alice, api, tmp_path):
    r = upload(alice, image_zip(tmp_path / "pets.zip", per_class=3))
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["id"].startswith("ds_") and ds["source"] == f"dataset:{ds['id']}"
    assert r.headers["location"] == f"/v1/datasets/{ds['id']}"
    s = ds["summary"]
    assert s["num_images"] == 6 and s["classes"] == ["cat", "dog"] and s["class_counts"] == {"cat": 3, "dog": 3}
    assert s["sizes"] == [{"width": 16, "height": 16, "count": 6}]
    assert ds["bytes"] > 0 and ds["name"] == "pets.zip"
    assert (api.data_dir / "datasets" / ds["id"] / "images").is_dir()
    assert alice.get(f"/v1/datasets/{ds['id']}").json()["summary"] == s
    assert ds["id"] in [d["id"] for d in alice.get("/v1/datasets").json()["items"]]
    # A job can now name it.
    job = alice.post("/v1/jobs", json={"type": "pretrain", "config": {"dataset": ds["source"], "epochs": 1, "batch_size": 4}})
    assert job.status_code == 202, job.text


def test_upload_npz_raw_body(alice, tmp_path):
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((5, 8, 8, 3), np.uint8), y=np.array([0, 1, 0, 1, 2]))
    r = alice.post("/v1/datasets", params={"filename": "tiny.npz"}, content=buf.getvalue(),
                   headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.json()["summary"]["num_images"] == 5 and r.json()["summary"]["format"] == "npz"


def test_zip_slip_is_refused_and_nothing_lands_outside(alice, api, tmp_path):
    before = dataset_dirs(api)
    evil = make_zip(tmp_path / "evil.zip", {"cat/ok.png": png_bytes(), "../../escaped.png": png_bytes()})
    r = upload(alice, evil)
    assert r.status_code == 422 and "escaped.png" in r.json()["detail"]
    assert not list(api.data_dir.parent.rglob("escaped.png"))
    assert dataset_dirs(api) == before and leftovers(api) == []


def test_corrupt_images_are_named_and_can_be_skipped(alice, tmp_path):
    archive = make_zip(tmp_path / "mixed.zip", {"cat/a.png": png_bytes(), "cat/broken.png": b"not a png",
                                                "dog/b.png": png_bytes()})
    r = upload(alice, archive)
    assert r.status_code == 422 and "broken.png" in r.json()["detail"]
    r = upload(alice, archive, skip_corrupt="true")
    assert r.status_code == 201 and r.json()["summary"]["corrupt"] == ["cat/broken.png"]


def test_unsupported_file_type_is_415(alice):
    r = alice.post("/v1/datasets", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 415 and "notes.txt" in r.json()["detail"]
    r = alice.post("/v1/datasets", data={"name": "x"})
    assert r.status_code == 422 and r.json()["detail"]


def _incompressible_zip(path, size):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("cat/noise.png", os.urandom(size))
    return path


def test_oversize_upload_is_413_and_nothing_is_registered(alice, api, tmp_path):
    before_ids = {d["id"] for d in alice.get("/v1/datasets").json()["items"]}
    big = _incompressible_zip(tmp_path / "big.zip", 400_000)
    r = upload(alice, big)  # Content-Length says it is too large
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the byte counter must stop it
        data = big.read_bytes()
        boundary = b"xyzboundary"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n\r\n'
        for i in range(0, len(data), 32_768):
            yield data[i:i + 32_768]
        yield b"\r\n--" + boundary + b"--\r\n"

    r = alice.post("/v1/datasets", content=chunks(),
                   headers={"content-type": "multipart/form-data; boundary=xyzboundary"})
    assert r.status_code == 413, r.text
    assert {d["id"] for d in alice.get("/v1/datasets").json()["items"]} == before_ids
    assert leftovers(api) == []


def test_interrupted_upload_leaves_nothing(alice, api, tmp_path):
    before = dataset_dirs(api)
    data = image_zip(tmp_path / "pets.zip").read_bytes()
    head = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"pets.zip\"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", api.port)) as s:
        s.sendall(b"POST /v1/datasets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ALICE.encode()
                  + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: "
                  + str(len(head) + len(data) + 10).encode() + b"\r\n\r\n" + head + data[: len(data) // 2])
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while leftovers(api) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(api) == [] and dataset_dirs(api) == before


def test_other_key_cannot_see_or_delete_my_dataset(alice, bob, tmp_path):
    ds = upload(alice, image_zip(tmp_path / "pets.zip")).json()
    assert bob.get(f"/v1/datasets/{ds['id']}").status_code == 404
    assert bob.delete(f"/v1/datasets/{ds['id']}").status_code == 404
    assert ds["id"] not in [d["id"] for d in bob.get("/v1/datasets").json()["items"]]
    r = bob.post("/v1/jobs", json={"type": "pretrain", "config": {"dataset": ds["source"]}})
    assert r.status_code == 422 and "not found" in r.json()["detail"]


def test_delete_removes_the_files_unless_an_active_job_uses_it(alice, api, tmp_path):
    ds = upload(alice, image_zip(tmp_path / "pets.zip")).json()
    job = alice.post("/v1/jobs", json={"type": "pretrain", "config": {"dataset": ds["source"], "batch_size": 4}}).json()
    r = alice.delete(f"/v1/datasets/{ds['id']}")
    assert r.status_code == 409 and job["id"] in r.json()["detail"]
    alice.post(f"/v1/jobs/{job['id']}/cancel")
    assert alice.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert alice.get(f"/v1/datasets/{ds['id']}").status_code == 404
    assert not (api.data_dir / "datasets" / ds["id"]).exists()


def test_per_key_caps_answer_429_with_retry_after(tmp_path):
    env = {"DCL_MAX_ACTIVE_JOBS_PER_KEY": "2", "DCL_MAX_STORED_BYTES_PER_KEY": "4000"}
    with run_api_server(tmp_path / "data", keys=["k1", "k2"], env=env) as server, \
            server.client("k1") as k1, server.client("k2") as k2:
        job = {"type": "pretrain", "config": {"epochs": 1}}
        assert [k1.post("/v1/jobs", json=job).status_code for _ in range(2)] == [202, 202]
        r = k1.post("/v1/jobs", json=job)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and "limit" in r.json()["detail"]
        assert k2.post("/v1/jobs", json=job).status_code == 202  # the cap is per key
        small, large = image_zip(tmp_path / "a.zip", per_class=2), image_zip(tmp_path / "b.zip", per_class=20)
        assert small.stat().st_size < 2000 < 4000 < large.stat().st_size
        assert upload(k1, small).status_code == 201
        r = upload(k1, large)  # would take k1 past its 4000 bytes
        assert r.status_code == 429 and r.headers["retry-after"] and "storage limit" in r.json()["detail"]
        assert upload(k2, small).status_code == 201


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _upload_bytes(client, name: str, data: bytes):
    return client.post("/v1/datasets", files={"file": (name, data, "application/octet-stream")})


def test_npz_labels_beyond_the_images_are_422_and_listings_stay_small(alice, tmp_path):
    # Issue 9, bug 1: y = [0, 10**9] grew the API to 22 GB building the summary.
    r = _upload_bytes(alice, "huge-label.npz", _npz(x=np.zeros((2, 4, 4, 3), np.uint8), y=np.array([0, 10**9])))
    assert r.status_code == 422 and "`y`" in r.json()["detail"] and "number the classes" in r.json()["detail"]
    n = 1000
    names = np.array([f"{i:05d}" + "n" * 200 for i in range(n)])
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.zeros((n, 2, 2), np.uint8), y=np.arange(n), classes=names)
    r = _upload_bytes(alice, "many.npz", buf.getvalue())
    assert r.status_code == 201, r.text
    summary = r.json()["summary"]
    assert summary["num_classes"] == n and summary["classes_truncated"] is True
    listing = alice.get("/v1/datasets", params={"limit": 500})
    assert listing.status_code == 200 and len(listing.content) < 100_000 * len(listing.json()["items"])


def test_npz_whose_header_lies_about_its_size_is_422(alice):
    # Issue 9, bug 2: 236 bytes claiming 10,000,000 x 32 x 32 x 3 images was accepted.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10_000_000, 32, 32, 3)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", header.getvalue())
    r = _upload_bytes(alice, "liar.npz", buf.getvalue())
    assert r.status_code == 422 and "more than the limit of 200000" in r.json()["detail"]
    assert "upload-" not in r.json()["detail"]  # never the server's temporary name
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (1000, 32, 32, 3)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", header.getvalue() + bytes(100))
    r = _upload_bytes(alice, "short.npz", buf.getvalue())
    assert r.status_code == 422 and "holds 100 bytes" in r.json()["detail"]


def test_npz_with_an_object_classes_array_is_422_naming_it(alice):
    # Issue 9, bug 6: a 500.
    data = _npz(x=np.zeros((2, 4, 4, 3), np.uint8), y=np.array([0, 1]), classes=np.array(["a", 1], dtype=object))
    r = _upload_bytes(alice, "objects.npz", data)
    assert r.status_code == 422 and "`classes` has dtype object" in r.json()["detail"]


def test_compressed_npz_counts_unpacked_against_the_quota_and_the_ratio_cap(tmp_path):
    # Issue 9, bug 2: a 1.2 MB .npz holding 1.2 GB counted 1.2 MB against the quota.
    env = {"DCL_MAX_STORED_BYTES_PER_KEY": "200000", "DCL_MAX_COMPRESSION_RATIO": "50"}
    with run_api_server(tmp_path / "data", keys=["k1"], env=env) as server, server.client("k1") as k1:
        buf = io.BytesIO()
        np.savez_compressed(buf, x=np.zeros((40, 32, 32, 3), np.uint8))  # 122,880 bytes unpacked
        small = buf.getvalue()
        assert len(small) < 5_000
        r = _upload_bytes(k1, "zeros.npz", small)
        assert r.status_code == 201 and r.json()["bytes"] >= 122_880
        r = _upload_bytes(k1, "zeros2.npz", small)
        assert r.status_code == 429 and "unpacks to" in r.json()["detail"]
        assert [d["name"] for d in k1.get("/v1/datasets").json()["items"]] == ["zeros.npz"]
        k1.delete(f"/v1/datasets/{k1.get('/v1/datasets').json()['items'][0]['id']}")
        buf = io.BytesIO()
        np.savez_compressed(buf, x=np.zeros((1200, 32, 32, 3), np.uint8))  # 3.7 MB of zeros
        r = _upload_bytes(k1, "bomb.npz", buf.getvalue())
        assert r.status_code == 422 and "compression ratio" in r.json()["detail"]
