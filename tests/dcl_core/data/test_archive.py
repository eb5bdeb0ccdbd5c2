"""dcl_core.data: safe extraction of untrusted archives (`archive`), image trees (`tree`), upload
inspection (`inspection`) and stored datasets (`stored`)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dcl_core.data.archive import safe_extract
from dcl_core.data.inspection import inspect_images, inspect_npz
from dcl_core.data.stored import dataset_layout, store_dataset
from dcl_core.data.tree import list_images
from dcl_core.errors import UserError

LIMITS = dict(max_total_bytes=1 << 30, max_files=10_000)
CLASS_COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "emu": (40, 40, 200)}


def png_bytes(colour=(128, 128, 128), size=(16, 16), mark: int = 0) -> bytes:
    im = Image.new("RGB", size, colour)
    ImageDraw.Draw(im).rectangle((mark % size[0], 0, mark % size[0] + 2, 3), fill=(255, 255, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def make_tree(root: Path, per_class: int = 3, classes=("cat", "dog", "emu")) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"{i:02d}.png").write_bytes(png_bytes(CLASS_COLOURS[c], mark=i))
    return root


def zip_of(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def tree_members(prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}{c}/{i:02d}.png": png_bytes(CLASS_COLOURS[c], mark=i) for c in ("cat", "dog") for i in range(2)}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- safe_extract


def test_zip_extracts_tree_and_counts_files(tmp_path):
    src = zip_of(tmp_path / "a.zip", tree_members())
    n = safe_extract(src, tmp_path / "out", **LIMITS)
    assert n == 4
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == [
        "cat/00.png", "cat/01.png", "dog/00.png", "dog/01.png",
    ]


@pytest.mark.parametrize("mode,suffix", [("w", ".tar"), ("w:gz", ".tar.gz"), ("w:gz", ".tgz")])
def test_tar_extracts_tree(tmp_path, mode, suffix):
    src = tmp_path / f"a{suffix}"
    with tarfile.open(src, mode) as tf:
        for name, data in tree_members("./").items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert safe_extract(src, tmp_path / "out", **LIMITS) == 4
    assert (tmp_path / "out" / "dog" / "01.png").read_bytes() == png_bytes(CLASS_COLOURS["dog"], mark=1)


def test_zip_slip_member_is_rejected_and_nothing_is_written(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    src = zip_of(tmp_path / "slip.zip", {"ok/a.png": png_bytes(), "../evil.txt": b"owned"})
    with pytest.raises(UserError, match=r"\.\./evil\.txt.*outside"):
        safe_extract(src, work / "out", **LIMITS)
    assert not (work / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert leftovers(work) == []  # no dest, no partial temp folder


def test_absolute_member_path_is_rejected(tmp_path):
    src = zip_of(tmp_path / "abs.zip", {"a.png": png_bytes(), "/tmp/abs-evil.txt": b"owned"})
    with pytest.raises(UserError, match="absolute"):
        safe_extract(src, tmp_path / "out", **LIMITS)
    assert not (tmp_path / "out").exists()


def test_absolute_tar_member_is_rejected(tmp_path):
    src = tmp_path / "abs.tar"
    with tarfile.open(src, "w") as tf:
        info = tarfile.TarInfo("/etc/evil.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UserError, match="absolute"):
        safe_extract(src, tmp_path / "out", **LIMITS)
    assert leftovers(tmp_path) == ["abs.tar"]


@pytest.mark.parametrize("link_type", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_links_are_rejected(tmp_path, link_type):
    src = tmp_path / "link.tar"
    with tarfile.open(src, "w") as tf:
        data = png_bytes()
        info = tarfile.TarInfo("imgs/a.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("imgs/passwd")
        link.type = link_type
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(UserError, match="link"):
        safe_extract(src, tmp_path / "out", **LIMITS)
    assert leftovers(tmp_path) == ["link.tar"]


def test_tar_device_is_rejected(tmp_path):
    src = tmp_path / "dev.tar"
    with tarfile.open(src, "w") as tf:
        dev = tarfile.TarInfo("null")
        dev.type = tarfile.CHRTYPE
        tf.addfile(dev)
    with pytest.raises(UserError, match="device"):
        safe_extract(src, tmp_path / "out", **LIMITS)


def test_zip_bomb_member_is_rejected_by_compression_ratio(tmp_path):
    src = zip_of(tmp_path / "bomb.zip", {"a.png": png_bytes(), "zeros.bin": bytes(50 * 1024 * 1024)})
    assert src.stat().st_size < 200_000
    with pytest.raises(UserError, match="compression ratio"):
        safe_extract(src, tmp_path / "out", **LIMITS)
    assert leftovers(tmp_path) == ["bomb.zip"]


def test_tar_gz_bomb_is_rejected_by_compression_ratio(tmp_path):
    src = tmp_path / "bomb.tar.gz"
    with tarfile.open(src, "w:gz") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 20 * 1024 * 1024
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(UserError, match="compression ratio"):
        safe_extract(src, tmp_path / "out", **LIMITS)
    assert leftovers(tmp_path) == ["bomb.tar.gz"]


def test_total_size_cap(tmp_path):
    members = {f"m{i}.bin": os.urandom(100_000) for i in range(5)}
    src = zip_of(tmp_path / "big.zip", members, zipfile.ZIP_STORED)
    with pytest.raises(UserError, match="more than 300000 bytes"):
        safe_extract(src, tmp_path / "out", max_total_bytes=300_000, max_files=100)
    assert leftovers(tmp_path) == ["big.zip"]


def test_size_cap_holds_when_headers_lie(tmp_path):
    """A zip whose central directory claims a tiny size still cannot write more than it claims."""
    data = os.urandom(3_000_000)
    src = zip_of(tmp_path / "liar.zip", {"big.bin": data}, zipfile.ZIP_STORED)
    raw = bytearray(src.read_bytes())
    cd = raw.rfind(b"PK\x01\x02")
    struct.pack_into("<I", raw, cd + 24, 1000)  # central directory: uncompressed size
    struct.pack_into("<I", raw, 22, 1000)  # local header: uncompressed size
    src.write_bytes(bytes(raw))
    with pytest.raises(UserError):
        safe_extract(src, tmp_path / "out", max_total_bytes=2_000_000, max_files=10)
    assert leftovers(tmp_path) == ["liar.zip"]


def test_max_files_cap(tmp_path):
    src = zip_of(tmp_path / "many.zip", {f"f{i}.png": b"x" for i in range(6)})
    with pytest.raises(UserError, match="more than 5 files"):
        safe_extract(src, tmp_path / "out", max_total_bytes=1 << 20, max_files=5)
    assert safe_extract(src, tmp_path / "out", max_total_bytes=1 << 20, max_files=6) == 6


def test_macosx_and_dotfiles_are_skipped(tmp_path):
    members = tree_members()
    members |= {"__MACOSX/cat/._00.png": b"junk", ".DS_Store": b"junk", "cat/.hidden.png": b"junk"}
    src = zip_of(tmp_path / "mac.zip", members)
    assert safe_extract(src, tmp_path / "out", **LIMITS) == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat", "dog"]
    assert not (tmp_path / "out" / "cat" / ".hidden.png").exists()


def test_not_an_archive_is_a_user_error(tmp_path):
    src = tmp_path / "x.zip"
    src.write_bytes(b"this is not a zip")
    with pytest.raises(UserError, match="not a zip or tar"):
        safe_extract(src, tmp_path / "out", **LIMITS)


def test_damaged_zip_leaves_nothing(tmp_path):
    src = zip_of(tmp_path / "bad.zip", tree_members())
    raw = bytearray(src.read_bytes())
    start = 30 + len("cat/00.png") + 4  # inside the first member's compressed data
    raw[start:start + 40] = bytes(40)
    src.write_bytes(bytes(raw))
    with pytest.raises(UserError):
        safe_extract(src, tmp_path / "out", **LIMITS)
    assert leftovers(tmp_path) == ["bad.zip"]


def test_dest_must_be_new_or_empty(tmp_path):
    src = zip_of(tmp_path / "a.zip", tree_members())
    (tmp_path / "empty").mkdir()
    assert safe_extract(src, tmp_path / "empty", **LIMITS) == 4
    with pytest.raises(FileExistsError):
        safe_extract(src, tmp_path / "empty", **LIMITS)


# --------------------------------------------------------------------------- listing and inspection


def test_class_folders_give_sorted_labels(tmp_path):
    make_tree(tmp_path / "d", per_class=2, classes=("emu", "cat", "dog"))
    paths, labels, classes = list_images(tmp_path / "d")
    assert classes == ["cat", "dog", "emu"]
    assert labels == [0, 0, 1, 1, 2, 2]
    assert [p.relative_to(tmp_path / "d").as_posix() for p in paths] == [
        "cat/00.png", "cat/01.png", "dog/00.png", "dog/01.png", "emu/00.png", "emu/01.png",
    ]
    summary = inspect_images(tmp_path / "d", skip_corrupt=False)
    assert summary.labelled and summary.num_images == 6
    assert summary.class_counts == {"cat": 2, "dog": 2, "emu": 2}
    assert summary.sizes == [(16, 16, 6)]
    assert summary.corrupt == []


def test_flat_folder_is_unlabelled(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(png_bytes(mark=i))
    (root / "README.txt").write_text("about these images")
    paths, labels, classes = list_images(root)
    assert len(paths) == 3 and labels is None and classes is None
    summary = inspect_images(root, skip_corrupt=False)
    assert not summary.labelled and summary.classes is None and summary.class_counts is None
    assert summary.num_images == 3
    assert summary.ignored == ["README.txt"]


def test_nested_top_folder_is_unwrapped(tmp_path):
    src = zip_of(tmp_path / "nested.zip", tree_members("cifar/train/"))
    safe_extract(src, tmp_path / "out", **LIMITS)
    _, labels, classes = list_images(tmp_path / "out")
    assert classes == ["cat", "dog"] and labels == [0, 0, 1, 1]
    summary = inspect_images(tmp_path / "out", skip_corrupt=False)
    assert summary.classes == ["cat", "dog"] and summary.num_images == 4


def test_images_both_on_top_and_in_folders_is_an_error(tmp_path):
    make_tree(tmp_path / "d", per_class=1)
    (tmp_path / "d" / "stray.png").write_bytes(png_bytes())
    with pytest.raises(UserError, match="class folder"):
        list_images(tmp_path / "d")


def test_corrupt_image_is_named(tmp_path):
    make_tree(tmp_path / "d", per_class=2)
    (tmp_path / "d" / "dog" / "broken.png").write_bytes(png_bytes()[:60])
    (tmp_path / "d" / "cat" / "text.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(UserError, match="set skip_corrupt: true") as err:
        inspect_images(tmp_path / "d", skip_corrupt=False)
    assert "dog/broken.png" in str(err.value) and "cat/text.jpg" in str(err.value)


def test_skip_corrupt_lists_and_skips(tmp_path):
    make_tree(tmp_path / "d", per_class=2)
    (tmp_path / "d" / "dog" / "broken.png").write_bytes(png_bytes()[:60])
    summary = inspect_images(tmp_path / "d", skip_corrupt=True)
    assert summary.corrupt == ["dog/broken.png"]
    assert summary.num_images == 6
    assert summary.class_counts == {"cat": 2, "dog": 2, "emu": 2}


def test_error_names_at_most_ten_files(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(13):
        (root / f"bad{i:02d}.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="and 3 more") as err:
        inspect_images(root, skip_corrupt=False)
    assert "bad09.png" in str(err.value) and "bad10.png" not in str(err.value)


def test_only_allowed_formats_are_decoded(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "good.png").write_bytes(png_bytes())
    Image.new("RGB", (8, 8)).save(root / "targa.png", format="TGA")  # a TGA named .png
    summary = inspect_images(root, skip_corrupt=True)
    assert summary.corrupt == ["targa.png"] and summary.num_images == 1


def test_decompression_bomb_counts_as_corrupt(tmp_path, monkeypatch):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "small.png").write_bytes(png_bytes(size=(8, 8)))
    (root / "huge.png").write_bytes(png_bytes(size=(64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    summary = inspect_images(root, skip_corrupt=True)
    assert summary.corrupt == ["huge.png"] and summary.num_images == 1


def test_no_images_is_an_error(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="no images found"):
        inspect_images(root, skip_corrupt=True)


def test_npz_summary(tmp_path):
    x = np.zeros((5, 12, 12, 3), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 1, 2, 2]))
    summary = inspect_npz(tmp_path / "d.npz")
    assert summary.num_images == 5 and summary.sizes == [(12, 12, 5)]
    assert summary.classes == ["0", "1", "2"] and summary.class_counts == {"0": 1, "1": 2, "2": 2}
    np.savez(tmp_path / "flat.npz", x=np.zeros((4, 9, 9), np.uint8))
    assert inspect_npz(tmp_path / "flat.npz").labelled is False


@pytest.mark.parametrize(
    "arrays,match",
    [
        ({"x": np.zeros((2, 8, 8, 3), np.float32)}, r"`x` must be uint8"),
        ({"x": np.zeros((2, 8, 8, 4), np.uint8)}, r"`x` must have shape"),
        ({"x": np.zeros((8, 8), np.uint8)}, r"`x` must have shape"),
        ({"images": np.zeros((2, 8, 8, 3), np.uint8)}, r"no array `x`"),
        ({"x": np.zeros((2, 8, 8, 3), np.uint8), "y": np.zeros(3, np.int64)}, r"`y` must be integer labels of shape \(2,\)"),
        ({"x": np.zeros((2, 8, 8, 3), np.uint8), "y": np.zeros(2, np.float32)}, r"`y` must be integer"),
    ],
)
def test_npz_errors_name_the_key(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError, match=match):
        inspect_npz(tmp_path / "d.npz")


def test_npz_with_pickled_objects_is_rejected(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 8, 8, 3), np.uint8), y=np.array([object(), object()]))
    with pytest.raises(UserError, match="`y`"):
        inspect_npz(tmp_path / "d.npz")


def test_store_dataset_writes_the_layout(tmp_path):
    src = zip_of(tmp_path / "upload.bin", tree_members("top/"))
    summary = store_dataset(src, tmp_path / "ds" / "ds_00000001", filename="mine.zip", **LIMITS)
    assert summary.classes == ["cat", "dog"]
    assert dataset_layout(tmp_path / "ds" / "ds_00000001") == tmp_path / "ds" / "ds_00000001" / "images"

    np.savez(tmp_path / "upload.npz", x=np.zeros((3, 8, 8, 3), np.uint8))
    store_dataset(tmp_path / "upload.npz", tmp_path / "ds" / "ds_00000002", **LIMITS)
    assert dataset_layout(tmp_path / "ds" / "ds_00000002").name == "data.npz"

    bad = zip_of(tmp_path / "bad.zip", {"../x.png": png_bytes()})
    with pytest.raises(UserError):
        store_dataset(bad, tmp_path / "ds" / "ds_00000003", **LIMITS)
    assert not (tmp_path / "ds" / "ds_00000003").exists()


def test_store_dataset_drops_skipped_corrupt_files(tmp_path):
    members = tree_members() | {"dog/broken.png": b"garbage"}
    src = zip_of(tmp_path / "up.zip", members)
    with pytest.raises(UserError, match="dog/broken.png"):
        store_dataset(src, tmp_path / "ds_1", **LIMITS)
    summary = store_dataset(src, tmp_path / "ds_2", skip_corrupt=True, **LIMITS)
    assert summary.corrupt == ["dog/broken.png"] and summary.num_images == 4
    assert not (tmp_path / "ds_2" / "images" / "dog" / "broken.png").exists()
    assert inspect_images(tmp_path / "ds_2" / "images", skip_corrupt=False).num_images == 4


def test_upload_checking_modules_do_not_import_torch():
    modules = "dcl_core.data.archive, dcl_core.data.tree, dcl_core.data.decode, dcl_core.data.inspection, dcl_core.data.stored"
    code = f"import sys, {modules}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


def test_a_broken_deflate_stream_is_a_damaged_archive_not_a_crash(tmp_path):
    # Found by tests/service/test_upload_fuzz.py: zlib.error ("invalid distance too far back")
    # escaped as a 500. The fuzzer's example, verbatim.
    (tmp_path / "bad.zip").write_bytes(
        b'PK\x03\x04\x14\x00\x00\x00\x08\x00\n\x96w]\xa0\x9a\xbe\x92G\x00\x00\x00\x88\x00\x00\x00\x05\x00'
        b'\x00\x00y.npy\x9b\xec\x17\xea\x1b\x10\xc9\xc8P\xc6P\xad\x9e\x92Z\x9c\\\xa4n\xa5\xa0n\x93i\xa1\xae'
        b'\xa3\xa0\x9e\x96_TR\x94\x98\x17\x9f_\x94\x92\n\x12wK\xcc)N\x05\x8a\x17g$\x16\xa4\x02\xf9\x1a\x86:'
        b'\x9a:\n\xb4\n\x14\x00.\x06(\x00\x00PK\x01\x02\x14\x03\x14\x00\x00\x00\x08\x00\n\x96w]\xa0\x9a\xbe'
        b'\x92G\x00\x00\x00\x88\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01\x00'
        b'\x00\x00\x00y.npyPK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x003\x00\x00\x00j\x00\x00\x00\x00\x00'
    )
    with pytest.raises(UserError, match="damaged"):
        safe_extract(tmp_path / "bad.zip", tmp_path / "out", **LIMITS)
