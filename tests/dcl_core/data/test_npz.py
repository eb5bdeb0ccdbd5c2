"""dcl_core.data.npz: an uploaded .npz is believed only as far as its bytes go."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from dcl_core.data.inspection import inspect_npz
from dcl_core.data.npz import MAX_CLASSES, check_npz
from dcl_core.data.stored import dataset_bytes, store_dataset
from dcl_core.errors import UserError


def npy_header(shape, descr="|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def lying_npz(path, shape, data: bytes = b"", extra: dict | None = None):
    """An .npz whose x.npy header says `shape` but holds only `data` after it."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", npy_header(shape) + data)
        for key, array in (extra or {}).items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, array, allow_pickle=True)
            zf.writestr(f"{key}.npy", buf.getvalue())
    return path


def test_labels_far_beyond_the_images_are_refused_before_any_summary_is_built(tmp_path):
    # Issue 9, bug 1: y = [0, 10**9] made the summary hold a billion class names.
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4, 3), np.uint8), y=np.array([0, 10**9]))
    with pytest.raises(UserError, match=r"label 1000000000.*at most the number of images \(2\)"):
        inspect_npz(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", x=np.zeros((2, 4, 4, 3), np.uint8), y=np.array([0, 2 * 10**6]))
    with pytest.raises(UserError, match="number the classes 0..K-1"):
        inspect_npz(tmp_path / "e.npz")


def test_labels_may_be_unsigned_but_not_negative_or_bool(tmp_path):
    np.savez(tmp_path / "u.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 2, 1], np.uint8))
    assert inspect_npz(tmp_path / "u.npz").classes == ["0", "1", "2"]
    np.savez(tmp_path / "n.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, -1, 1]))
    with pytest.raises(UserError, match=">= 0"):
        inspect_npz(tmp_path / "n.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.array([True, False, True]))
    with pytest.raises(UserError, match="`y` must be integer"):
        inspect_npz(tmp_path / "b.npz")


def test_the_stored_summary_stays_small_however_many_classes(tmp_path):
    n = 3000
    names = np.array([f"class-{i:05d}-" + "x" * 180 for i in range(n)])
    np.savez(tmp_path / "d.npz", x=np.zeros((n, 1, 1), np.uint8), y=np.arange(n), classes=names)
    summary = inspect_npz(tmp_path / "d.npz")
    assert len(summary.classes) == n  # the engine still gets every name
    stored = summary.to_dict()
    assert stored["num_classes"] == n and stored["classes_truncated"] is True
    assert 0 < len(stored["classes"]) < n and set(stored["class_counts"]) == set(stored["classes"])
    assert len(json.dumps(stored)) < 100_000


def test_too_many_or_too_long_class_names_are_refused(tmp_path):
    x = np.zeros((2, 4, 4), np.uint8)
    np.savez(tmp_path / "long.npz", x=x, y=np.array([0, 1]), classes=np.array(["a", "b" * 1000]))
    with pytest.raises(UserError, match="class names to 255"):
        inspect_npz(tmp_path / "long.npz")
    lying_npz(tmp_path / "many.npz", (2, 4, 4), bytes(32),
              extra={"y": np.array([0, 1]), "classes": np.array(["c"] * (MAX_CLASSES + 1))})
    with pytest.raises(UserError, match=f"more than the limit of {MAX_CLASSES}"):
        inspect_npz(tmp_path / "many.npz")


def test_an_object_classes_array_is_refused_by_name_and_never_unpickled(tmp_path):
    # Issue 9, bug 6: np.load raised a plain ValueError here (a 500 in the API).
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4, 3), np.uint8), y=np.array([0, 1]),
             classes=np.array(["cat", None], dtype=object))
    with pytest.raises(UserError, match=r"array `classes` has dtype object"):
        inspect_npz(tmp_path / "d.npz")


def test_an_object_array_under_any_name_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4, 3), np.uint8), notes=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError, match=r"array `notes` has dtype object"):
        inspect_npz(tmp_path / "d.npz")


def test_a_header_that_claims_more_images_than_the_file_holds_is_refused(tmp_path):
    # Issue 9, bug 2: a 236-byte file claiming 10,000,000 x 32 x 32 x 3 was accepted.
    path = lying_npz(tmp_path / "lie.npz", (10_000_000, 32, 32, 3))
    assert path.stat().st_size < 400
    with pytest.raises(UserError, match=r"says shape \(10000000, 32, 32, 3\).*holds 0 bytes"):
        check_npz(path)
    path = lying_npz(tmp_path / "short.npz", (10, 8, 8, 3), bytes(8 * 8 * 3 * 9))
    with pytest.raises(UserError, match="truncated or damaged"):
        check_npz(path)
    with pytest.raises(UserError, match="more than the limit of 1000"):
        check_npz(lying_npz(tmp_path / "many.npz", (10_000_000, 1, 1)), max_images=1000)


def test_huge_image_dimensions_are_refused(tmp_path):
    with pytest.raises(UserError, match="decompression-bomb limit"):
        check_npz(lying_npz(tmp_path / "wide.npz", (1, 100_000, 100_000, 3)))


def _bomb(path, unpacked: int):
    """A compressed .npz whose x is `unpacked` bytes of zeros (written in chunks)."""
    side = 64
    n = unpacked // (side * side * 3)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as f:
            f.write(npy_header((n, side, side, 3)))
            chunk = bytes(side * side * 3 * 64)
            for _ in range(n // 64):
                f.write(chunk)
            f.write(bytes(side * side * 3 * (n % 64)))
    return path


def test_compressed_npz_is_held_to_the_archive_caps(tmp_path):
    bomb = _bomb(tmp_path / "bomb.npz", 24 << 20)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(UserError, match="compression ratio"):
        check_npz(bomb, max_ratio=200.0)
    with pytest.raises(UserError, match="unpacks to more than"):
        check_npz(bomb, max_total_bytes=8 << 20)
    assert check_npz(bomb).unpacked_bytes > (24 << 20) - 1000  # no caps (the CLI's own files): fine


def test_a_stored_npz_counts_its_unpacked_size(tmp_path):
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.zeros((40, 32, 32, 3), np.uint8))
    (tmp_path / "up.npz").write_bytes(buf.getvalue())
    assert len(buf.getvalue()) < 10_000
    store_dataset(tmp_path / "up.npz", tmp_path / "ds_1", max_total_bytes=1 << 30, max_files=1000)
    assert dataset_bytes(tmp_path / "ds_1") >= 40 * 32 * 32 * 3


def test_damaged_members_are_a_user_error(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3))
    data = bytearray((tmp_path / "d.npz").read_bytes())
    data[200] ^= 0xFF  # inside x's data: the CRC no longer matches
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged"):
        check_npz(tmp_path / "bad.npz")
    (tmp_path / "cut.npz").write_bytes(bytes(data[:150]))
    with pytest.raises(UserError):
        check_npz(tmp_path / "cut.npz")


def test_a_zip_directory_naming_an_unknown_zip_version_is_a_user_error(tmp_path):
    # Found by tests/service/test_upload_fuzz.py: NotImplementedError("zip file version 8.4"), a 500.
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 2, 2, 3), np.uint8))
    data = bytearray((tmp_path / "d.npz").read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 6] = 84  # "version needed to extract": 8.4
    (tmp_path / "v84.npz").write_bytes(bytes(data))
    with pytest.raises(UserError, match="not a readable .npz"):
        check_npz(tmp_path / "v84.npz")
