"""A file-format fuzz of POST /v1/datasets: generated zips, tars and .npz files (truncated,
flipped bytes, lying headers, huge dimensions, odd dtypes, object arrays, links, escaping
names, bombs) sent to a real API (uvicorn on a free port). Every one must get a 201 or a
4xx, never a 5xx; the API's peak memory (VmHWM from /proc) stays under 1 GiB; nothing is
written outside the datasets folder.

`make test` runs a few examples of each format; `DCL_FUZZ_EXAMPLES=500 make fuzz-uploads` more.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.fixtures.servers import run_api_server

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning")]  # duplicate zip names

EXAMPLES = int(os.environ.get("DCL_FUZZ_EXAMPLES", "12"))
MAX_RSS_BYTES = 1 << 30
MARKER = f"dcl-fuzz-{secrets.token_hex(4)}"
"""In every escaping member name: no file with it may appear anywhere."""

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                derandomize="DCL_FUZZ_EXAMPLES" not in os.environ)  # the same examples in make test


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    env = {"DCL_MAX_UPLOAD_BYTES": str(4 << 20), "DCL_MAX_EXTRACTED_BYTES": str(48 << 20),
           "DCL_MAX_DATASET_FILES": "500"}
    with run_api_server(root / "data", env=env) as api:
        api.root = root
        yield api


def outside_datasets(api) -> set[str]:
    """Every path under the test's folder but outside datasets/, less the job store and logs."""
    datasets = api.data_dir / "datasets"
    found = set()
    for path in api.root.rglob("*"):
        if path == datasets or datasets in path.parents or path.name.startswith(("dcl.db", "broker.db", "api-")):
            continue
        found.add(path.relative_to(api.root).as_posix())
    return found


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def post(api, filename: str, data: bytes):
    before = outside_datasets(api)
    with api.client(timeout=120) as client:
        r = client.post("/v1/datasets", files={"file": (filename, data, "application/octet-stream")})
        assert r.status_code < 500, f"{filename} ({len(data)} bytes): {r.status_code} {r.text}\n{api.output()[-3000:]}"
        assert r.status_code in (201, 400, 413, 415, 422, 429), r.text
        assert r.headers["content-type"].startswith("application/json") and r.json()["detail" if r.status_code >= 400 else "id"]
        if r.status_code == 201:
            assert client.delete(f"/v1/datasets/{r.json()['id']}").status_code == 204
    assert peak_rss(api.process.pid) < MAX_RSS_BYTES
    assert outside_datasets(api) == before
    assert not [p for p in Path("/tmp").glob(f"*{MARKER}*")]


# --------------------------------------------------------------------------- generators

NAMES = st.one_of(
    st.sampled_from([
        "cls/a.png", "cls/b.jpg", "a.png", "other/x.bmp", "cls/sub/deep.gif", "dir/", "notes.txt",
        f"../{MARKER}.png", f"cls/../../{MARKER}.png", f"/tmp/{MARKER}-abs.png", f"C:/{MARKER}.png",
        f"..\\..\\{MARKER}.png", ".hidden/a.png", "__MACOSX/cls/a.png", "cls/" + "n" * 250 + ".png",
        "cls/a.png/inner.png", "cls", "cls/",
    ]),
    st.from_regex(r"[a-z]{1,3}/[a-z0-9]{1,8}\.(png|jpg|bmp)", fullmatch=True),
)


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@st.composite
def image_bytes(draw) -> bytes:
    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP", "GIF"]))
    mode = "RGB" if fmt == "JPEG" else draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1"]))
    size = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    buf = io.BytesIO()
    Image.new(mode, size, draw(st.integers(0, 255)) if mode in ("L", "P", "1") else (draw(st.integers(0, 255)), 9, 9)
              ).save(buf, fmt)
    return buf.getvalue()


CONTENT = st.one_of(
    image_bytes(),
    st.binary(max_size=600),
    st.sampled_from([0, 1 << 20, 6 << 20]).map(bytes),  # flat data: ratio and size caps
    st.sampled_from([(100_000, 100_000), (1, 1 << 30), (65_535, 65_535)]).map(lambda wh: png_bomb(*wh)),
)


@st.composite
def damage(draw, data: bytes) -> bytes:
    """Maybe truncate it, maybe flip a few bytes."""
    how = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if how == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
        return bytes(out)
    return data


@st.composite
def zips(draw) -> bytes:
    buf = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in draw(st.lists(st.tuples(NAMES, CONTENT), min_size=0, max_size=6)):
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            if draw(st.integers(0, 9)) == 0:  # a symlink or device by its mode bits
                info.external_attr = draw(st.sampled_from([0o120777, 0o020644, 0o010644])) << 16
            try:
                zf.writestr(info, data)
            except (ValueError, UserWarning):
                pass
    return draw(damage(buf.getvalue()))


@st.composite
def tars(draw) -> bytes:
    buf = io.BytesIO()
    mode = draw(st.sampled_from(["w", "w:gz"]))
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in draw(st.lists(st.tuples(NAMES, CONTENT), min_size=0, max_size=6)):
            info = tarfile.TarInfo(name)
            info.type = draw(st.sampled_from([tarfile.REGTYPE] * 6 + [
                tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE]))
            if info.type == tarfile.REGTYPE:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                info.linkname = draw(NAMES)
                tf.addfile(info)
    return draw(damage(buf.getvalue()))


DESCRS = ["|u1", "|u1", "|u1", "<f4", "<i8", "|b1", "<U5", "|S3", "|O", "<u8", ">i4", "<c16", "<V4"]
DIMS = st.sampled_from([0, 1, 2, 3, 4, 8, 16, 32, 10_000_000, 2**40])


def npy(descr: str, shape: tuple[int, ...], body: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + body


@st.composite
def real_array(draw, key: str, n: int) -> bytes:
    """A well-formed array for an .npz of n images, with awkward values: labels far out of
    range or negative, too few or non-string class names, object arrays."""
    if key == "x":
        array = np.zeros((n, draw(st.integers(1, 16)), draw(st.integers(1, 16)), draw(st.sampled_from([1, 3]))),
                         np.uint8)
    elif key == "y":
        label = st.one_of(st.integers(0, n - 1), st.integers(-(2**40), 2**62))
        array = np.array(draw(st.lists(label, min_size=n, max_size=n)), dtype=np.int64)
    else:
        names = draw(st.lists(st.text(max_size=12), min_size=0, max_size=n + 2))
        kind = draw(st.sampled_from([str, bytes, object]))
        array = np.array(names if kind is str else [x.encode() for x in names] if kind is bytes else names + [None],
                         dtype=kind if kind is not bytes else "S")
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    return buf.getvalue()


@st.composite
def lying_array(draw) -> bytes:
    shape = tuple(draw(st.lists(DIMS, min_size=0, max_size=5)))
    size = int(np.prod(shape, dtype=object)) if shape else 1
    body = draw(st.one_of(
        st.binary(max_size=256),
        st.just(bytes(min(size, 1 << 16))) if size <= 1 << 16 else st.just(b""),
        st.sampled_from([0, 3 << 20]).map(bytes),
    ))
    return npy(draw(st.sampled_from(DESCRS)), shape, body)


@st.composite
def npzs(draw) -> bytes:
    buf = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        n = draw(st.integers(1, 6))
        keys = draw(st.lists(st.sampled_from(["x", "y", "classes", "extra"]), max_size=4, unique=True))
        if draw(st.integers(0, 4)):  # mostly with an x, so that y and classes get checked
            keys = ["x"] + [key for key in keys if key != "x"]
        for key in keys:
            data = draw(st.one_of(real_array(key, n), real_array(key, n), lying_array()))
            zf.writestr(f"{key}.npy", data)
    return draw(damage(buf.getvalue()))


SUFFIX = {"zip": ".zip", "tar": ".tar.gz", "npz": ".npz"}


def filename(draw, kind: str) -> str:
    suffix = SUFFIX[kind] if draw(st.integers(0, 5)) else draw(st.sampled_from([".zip", ".tar", ".tgz", ".npz"]))
    return f"fuzz{suffix}"


@FUZZ
@given(data=st.data())
def test_generated_zips_get_201_or_4xx(server, data):
    post(server, filename(data.draw, "zip"), data.draw(zips()))


@FUZZ
@given(data=st.data())
def test_generated_tars_get_201_or_4xx(server, data):
    post(server, filename(data.draw, "tar"), data.draw(tars()))


@FUZZ
@given(data=st.data())
def test_generated_npzs_get_201_or_4xx(server, data):
    post(server, filename(data.draw, "npz"), data.draw(npzs()))


def test_the_fuzzer_reaches_both_answers(server):
    """The generators are not all refused: a plain one of each kind is accepted."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        img = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(img, "PNG")
        zf.writestr("cls/a.png", img.getvalue())
    npz = io.BytesIO()
    np.savez(npz, x=np.zeros((2, 4, 4, 3), np.uint8), y=np.array([0, 1]))
    with server.client() as client:
        for name, payload in (("ok.zip", buf.getvalue()), ("ok.npz", npz.getvalue())):
            r = client.post("/v1/datasets", files={"file": (name, payload, "application/octet-stream")})
            assert r.status_code == 201, r.text
            client.delete(f"/v1/datasets/{r.json()['id']}")
