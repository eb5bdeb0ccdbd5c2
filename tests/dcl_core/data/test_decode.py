"""The batched JPEG decoder gives Pillow's pixels, and the decode cache gives back what it
stored, skips decoding, and is rebuilt when damaged."""

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from dcl_core.config import DatasetSpec
from dcl_core.data import decode, decode_cache
from dcl_core.data.decode import decode_into
from dcl_core.data.sources import DataEnv, load_images


def _save(path, array, fmt="JPEG", **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, **kwargs)


def _exif_rotated(array) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path):
    """Two classes of 16 px images in every kind the decoder must handle alike."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in ("a", "b"):
        for i in range(6):
            _save(root / c / f"rgb{i}.jpg", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), quality=90)
        _save(root / c / "gray.jpg", rng.integers(0, 255, (16, 16), dtype=np.uint8))
        _save(root / c / "progressive.jpg", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), progressive=True)
        _save(root / c / "large.jpg", rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))  # resized by Pillow
        _save(root / c / "lossless.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), fmt="PNG")
        (root / c / "rotated.jpg").write_bytes(_exif_rotated(rng.integers(0, 255, (16, 12, 3), dtype=np.uint8)))
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def spec(root, **kw) -> DatasetSpec:
    return DatasetSpec(source=str(root), image_size=16, skip_corrupt=True, **kw)


def test_batched_decode_gives_pillows_pixels(folder, monkeypatch):
    monkeypatch.setattr(decode, "CHUNK", 4)  # several batches, in threads
    paths = sorted(folder.rglob("*.*"))
    reference = np.zeros((len(paths), 3, 16, 16), np.uint8)
    for i, path in enumerate(paths):
        if path.name != "broken.jpg":
            decode_into(path, reference[i], 16)
    out = np.zeros_like(reference)
    calls = []

    def fallback(i):
        calls.append(paths[i].name)
        try:
            return decode_into(paths[i], out[i], 16)
        except Exception as exc:
            return str(exc)

    results = decode.decode_files(paths, out, 16, fallback, workers=2)
    assert (out == reference).all()
    assert isinstance(results[paths.index(folder / "b" / "broken.jpg")], str)
    # Pillow decoded only what the batch decoder must not: resizes, PNG, EXIF, damaged files.
    assert sorted(set(calls)) == ["broken.jpg", "large.jpg", "lossless.png", "rotated.jpg"]


def test_jpeg_size_reads_plain_headers_only(folder):
    assert decode.jpeg_size((folder / "a" / "rgb0.jpg").read_bytes()) == (16, 16)
    assert decode.jpeg_size((folder / "a" / "large.jpg").read_bytes()) == (30, 40)  # (width, height)
    assert decode.jpeg_size((folder / "a" / "rotated.jpg").read_bytes()) is None
    assert decode.jpeg_size((folder / "a" / "lossless.png").read_bytes()) is None
    assert decode.jpeg_size(b"\xff\xd8\xff") is None


def _no_decoding(*args, **kwargs):
    raise AssertionError("decoded although the cache holds the images")


def test_second_load_comes_from_the_cache_without_decoding(folder, tmp_path, monkeypatch):
    env = DataEnv(cache_dir=tmp_path / "cache")
    first = load_images(spec(folder), env)
    cached = list((tmp_path / "cache" / "decoded").glob("*.npz"))
    assert len(cached) == 1
    monkeypatch.setattr(decode, "decode_images", _no_decoding)
    second = load_images(spec(folder), env)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.num_images == 2 * 11 - 0 and first.classes == second.classes == ["a", "b"]


def test_another_size_or_a_changed_file_misses_the_cache(folder, tmp_path):
    env = DataEnv(cache_dir=tmp_path / "cache")
    first = load_images(spec(folder), env).images
    load_images(DatasetSpec(source=str(folder), image_size=8, skip_corrupt=True), env)
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npz"))) == 2
    changed = folder / "a" / "rgb0.jpg"
    _save(changed, np.zeros((16, 16, 3), np.uint8))
    os.utime(changed, ns=(1, 1))
    images = load_images(spec(folder), env).images
    changed_at = [i for i in range(len(images)) if not torch.equal(images[i], first[i])]
    assert len(changed_at) == 1 and int(images[changed_at[0]].max()) < 8  # the new, black image
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npz"))) == 3


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_cache_file_is_ignored_and_rebuilt(folder, tmp_path, damage):
    env = DataEnv(cache_dir=tmp_path / "cache")
    first = load_images(spec(folder), env)
    (cached,) = (tmp_path / "cache" / "decoded").glob("*.npz")
    raw = bytearray(cached.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[len(raw) // 2] ^= 0xFF  # inside the pixels: only the CRC-32 notices
    else:
        raw = bytearray(b"not a cache file")
    cached.write_bytes(bytes(raw))
    again = load_images(spec(folder), env)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert decode_cache.load_cached(cached, len(sorted(folder.rglob("*.*")))) is not None  # rewritten whole
