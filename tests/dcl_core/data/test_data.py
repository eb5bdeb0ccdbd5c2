"""dcl_core.data.sources: every source becomes the same uint8 ImageSet; the training batch sampler."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dcl_core.config import DatasetSpec
from dcl_core.data.imageset import MIN_CHANNEL_STD, ImageSet
from dcl_core.data.sources import DataEnv, load_images
from dcl_core.data.stored import dataset_layout
from dcl_core.errors import UserError

COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "emu": (40, 40, 200)}


def draw(colour, i: int, size=(16, 16)) -> Image.Image:
    im = Image.new("RGB", size, colour)
    ImageDraw.Draw(im).ellipse((i, i, i + 5, i + 7), fill=(255, 255, i * 40))
    return im


@pytest.fixture
def tree(tmp_path) -> Path:
    """Three classes, created out of order, three PNGs each (lossless: every source decodes alike)."""
    root = tmp_path / "tree"
    for c in ("emu", "cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            draw(COLOURS[c], i).save(root / c / f"img{i}.png")
    return root


def expected_arrays() -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([np.asarray(draw(COLOURS[c], i)) for c in ("cat", "dog", "emu") for i in range(3)])
    y = np.repeat(np.arange(3), 3)
    return x, y


def write_zip(tree: Path, dest: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(tree.rglob("*.png")):
            zf.write(p, prefix + p.relative_to(tree).as_posix())
    return dest


def write_tar(tree: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(tree, arcname="tree")
    return dest


def load(source, **spec) -> ImageSet:
    env = spec.pop("env", DataEnv())
    return load_images(DatasetSpec(source=str(source), **spec), env)


# --------------------------------------------------------------------------- builtin


def test_digits_train_and_test_split():
    train = load("builtin:digits")
    test = load("builtin:digits", split="test")
    assert train.num_images == 1437 and test.num_images == 360
    for s in (train, test):
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (3, 8, 8)
        assert s.images.is_contiguous()
        assert torch.equal(s.images[:, 0], s.images[:, 1]) and torch.equal(s.images[:, 0], s.images[:, 2])
        assert s.labels.dtype == torch.int64 and s.labels.shape == (s.num_images,)
        assert set(s.labels.tolist()) == set(range(10))
        assert s.image_size == 8
    assert train.classes == [str(i) for i in range(10)]
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert train.labels[:10].tolist() == list(range(10))  # scikit-learn's order


def test_digits_resized():
    s = load("builtin:digits", split="test", image_size=32)
    assert s.images.shape == (360, 3, 32, 32) and s.image_size == 32
    assert s.images.dtype == torch.uint8


def test_max_images_keeps_the_first():
    full = load("builtin:digits")
    few = load("builtin:digits", max_images=10)
    assert torch.equal(few.images, full.images[:10]) and torch.equal(few.labels, full.labels[:10])


# --------------------------------------------------------------------------- files


def test_folder_zip_tar_npz_give_the_same_images(tree, tmp_path):
    x, y = expected_arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y, classes=np.array(["cat", "dog", "emu"]))
    sources = [
        tree,
        write_zip(tree, tmp_path / "d.zip"),
        write_zip(tree, tmp_path / "nested.zip", prefix="top/"),
        write_tar(tree, tmp_path / "d.tar.gz"),
        tmp_path / "d.npz",
    ]
    want = torch.from_numpy(x).permute(0, 3, 1, 2)
    for src in sources:
        s = load(src)
        assert s.images.dtype == torch.uint8 and s.images.is_contiguous(), src
        assert torch.equal(s.images, want), src
        assert s.labels.tolist() == y.tolist(), src
        assert s.classes == ["cat", "dog", "emu"], src
        assert s.source == str(src)


def test_labels_follow_sorted_class_folders(tree):
    s = load(tree)
    assert s.classes == ["cat", "dog", "emu"]
    red = s.images[:, 0].float().mean(dim=(1, 2))
    blue = s.images[:, 2].float().mean(dim=(1, 2))
    assert (red[s.labels == 0] > 150).all() and (blue[s.labels == 2] > 150).all()


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(4):
        draw((10, 20, 30), i).save(tmp_path / f"{i}.png")
    s = load(tmp_path)
    assert s.num_images == 4 and s.labels is None and s.classes is None


def test_folder_resize_and_grayscale(tmp_path):
    Image.new("L", (40, 40), 77).save(tmp_path / "a.png")
    Image.new("RGBA", (40, 40), (10, 20, 30, 255)).save(tmp_path / "b.png")
    Image.new("RGB", (40, 40), (5, 6, 7)).save(tmp_path / "c.jpg", quality=95)
    s = load(tmp_path, image_size=20)
    assert s.images.shape == (3, 3, 20, 20)
    assert s.images[0].unique().tolist() == [77]
    assert s.images[1, :, 10, 10].tolist() == [10, 20, 30]


def test_non_square_needs_image_size(tmp_path):
    for i in range(2):
        draw((1, 2, 3), i, size=(24, 16)).save(tmp_path / f"{i}.png")
    with pytest.raises(UserError, match="set image_size"):
        load(tmp_path)
    s = load(tmp_path, image_size=16)
    assert s.images.shape == (2, 3, 16, 16)


def test_mixed_sizes_need_image_size(tmp_path):
    draw((1, 2, 3), 0, size=(16, 16)).save(tmp_path / "a.png")
    draw((1, 2, 3), 0, size=(20, 20)).save(tmp_path / "b.png")
    with pytest.raises(UserError, match="different sizes.*set image_size"):
        load(tmp_path)
    assert load(tmp_path, image_size=16).images.shape == (2, 3, 16, 16)


def test_non_square_npz_needs_image_size(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 10, 14), np.uint8))
    with pytest.raises(UserError, match="set image_size"):
        load(tmp_path / "d.npz")
    s = load(tmp_path / "d.npz", image_size=8)
    assert s.images.shape == (3, 3, 8, 8) and s.labels is None


def test_corrupt_file_is_named_or_skipped(tree):
    (tree / "dog" / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match=r"dog/bad\.png.*set skip_corrupt: true"):
        load(tree)
    s = load(tree, skip_corrupt=True)
    x, y = expected_arrays()
    assert s.num_images == 9
    assert s.labels.tolist() == y.tolist()
    assert torch.equal(s.images, torch.from_numpy(x).permute(0, 3, 1, 2))


def test_archive_is_cached_by_content(tree, tmp_path):
    src = write_zip(tree, tmp_path / "d.zip")
    env = DataEnv(cache_dir=tmp_path / "cache")
    first = load(src, env=env)
    extracted = list((tmp_path / "cache" / "extracted").iterdir())
    assert len(extracted) == 1
    second = load(src, env=env)
    assert torch.equal(first.images, second.images)
    assert list((tmp_path / "cache" / "extracted").iterdir()) == extracted


def test_unknown_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        load(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not an image folder"):
        load(tmp_path / "notes.txt")


# --------------------------------------------------------------------------- torchvision and stored datasets


def test_torchvision_missing_files_name_the_folder(tmp_path):
    env = DataEnv(torchvision_root=tmp_path / "tv")
    with pytest.raises(UserError, match="cifar-10-batches-py") as err:
        load("torchvision:CIFAR10", env=env)
    assert str(tmp_path / "tv") in str(err.value) and "download: true" in str(err.value)


def test_torchvision_download_needs_the_server_to_allow_it(tmp_path):
    env = DataEnv(torchvision_root=tmp_path / "tv", allow_download=False)
    with pytest.raises(UserError, match="not allowed"):
        load("torchvision:MNIST", download=True, env=env)


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's idx format: a magic of dtype 0x08 (uint8) and the rank, then big-endian dims."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_files_are_converted(tmp_path):
    """Files in torchvision's own FashionMNIST layout (made here: the real ones are a download)."""
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    y = np.array([3, 1, 4, 1, 5, 9], np.uint8)
    for split in ("train", "t10k"):
        write_idx(raw / f"{split}-images-idx3-ubyte", x)
        write_idx(raw / f"{split}-labels-idx1-ubyte", y)
    env = DataEnv(torchvision_root=tmp_path / "tv")
    s = load("torchvision:FashionMNIST", env=env)
    assert s.images.shape == (6, 3, 28, 28) and s.images.dtype == torch.uint8
    assert torch.equal(s.images[:, 1], torch.from_numpy(x))
    assert s.labels.tolist() == y.tolist() and len(s.classes) == 10
    small = load("torchvision:FashionMNIST", split="test", image_size=14, max_images=4, env=env)
    assert small.images.shape == (4, 3, 14, 14) and small.labels.tolist() == [3, 1, 4, 1]


def test_torchvision_cifar_batches_are_converted(tmp_path, monkeypatch):
    """CIFAR-10's pickled batches, made here; torchvision's md5 check is the one thing bypassed."""
    import pickle

    import torchvision.datasets.cifar

    folder = tmp_path / "tv" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = rng.integers(0, 256, (2, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": batches[name], "labels": [7, 2]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    s = load("torchvision:CIFAR10", env=DataEnv(torchvision_root=tmp_path / "tv"))
    assert s.images.shape == (10, 3, 32, 32) and s.images.is_contiguous()
    assert torch.equal(s.images[0].flatten(), torch.from_numpy(batches["data_batch_1"][0]))
    assert s.labels.tolist() == [7, 2] * 5 and s.classes[7] == "c7"


def test_dataset_id_resolves_under_datasets_dir(tree, tmp_path):
    datasets = tmp_path / "datasets"
    (datasets / "ds_0000aaaa").mkdir(parents=True)
    (tree).rename(datasets / "ds_0000aaaa" / "images")
    x, y = expected_arrays()
    (datasets / "ds_0000bbbb").mkdir()
    np.savez(datasets / "ds_0000bbbb" / "data.npz", x=x, y=y)
    env = DataEnv(datasets_dir=datasets)

    assert dataset_layout(datasets / "ds_0000aaaa") == datasets / "ds_0000aaaa" / "images"
    images = load("dataset:ds_0000aaaa", env=env)
    arrays = load("dataset:ds_0000bbbb", env=env)
    assert torch.equal(images.images, arrays.images)
    assert images.labels.tolist() == arrays.labels.tolist() == y.tolist()
    with pytest.raises(UserError, match="no such dataset"):
        load("dataset:ds_0000cccc", env=env)
    with pytest.raises(UserError, match="not available"):
        load("dataset:ds_0000aaaa")


# --------------------------------------------------------------------------- ImageSet


def test_channel_stats_on_constant_images():
    images = torch.empty(5, 3, 4, 4, dtype=torch.uint8)
    images[:, 0], images[:, 1], images[:, 2] = 51, 102, 204
    mean, std = ImageSet(images, None, None, "test").channel_stats()
    assert mean == pytest.approx((0.2, 0.4, 0.8), abs=1e-12)
    # Issue 9, item 11: std 0 failed the job ("std must be > 0"); a constant channel gets the floor.
    assert std == (MIN_CHANNEL_STD,) * 3


def test_channel_stats_on_a_subsample():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 3, 6, 6), dtype=torch.uint8, generator=g)
    mean, std = ImageSet(images, None, None, "test").channel_stats(max_images=100, chunk=7)
    x = images.double() / 255
    ref_mean = x.mean(dim=(0, 2, 3))
    assert mean == pytest.approx(tuple(ref_mean.tolist()), abs=0.02)
    full_mean, full_std = ImageSet(images, None, None, "test").channel_stats(chunk=7)
    assert full_mean == pytest.approx(tuple(ref_mean.tolist()), abs=1e-12)
    assert full_std == pytest.approx(tuple(x.std(dim=(0, 2, 3), unbiased=False).tolist()), abs=1e-9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_channel_stats_on_cuda():
    images = torch.full((8, 3, 4, 4), 51, dtype=torch.uint8, device="cuda")
    mean, std = ImageSet(images, None, None, "test").channel_stats()
    assert mean == pytest.approx((0.2,) * 3) and std == pytest.approx((0.0,) * 3, abs=1e-7)


# --------------------------------------------------------------------------- streaming (open_images)


def stream(source, **spec):
    from dcl_core.data.sources import open_images
    from dcl_core.data.stream import ImageStream

    env = spec.pop("env", DataEnv())
    data = open_images(DatasetSpec(source=str(source), in_memory=False, **spec), env)
    assert isinstance(data, ImageStream)
    return data


def test_should_stream_above_the_decoded_size_limit():
    from dcl_core.data.stream import IN_MEMORY_MAX_BYTES, should_stream

    limit = 10 * 3 * 16 * 16
    assert not should_stream(None, 10, 16, max_bytes=limit)
    assert should_stream(None, 11, 16, max_bytes=limit)
    assert not should_stream(True, 11, 16, max_bytes=limit) and should_stream(False, 10, 16, max_bytes=limit)
    assert not should_stream(None, 50_000, 32) and should_stream(None, 1_281_167, 224)  # CIFAR-10, ImageNet
    assert IN_MEMORY_MAX_BYTES == 4 << 30


def test_a_streamed_folder_yields_the_in_memory_images_in_epoch_order(tree):
    from dcl_core.data.imageset import epoch_order

    memory = load(tree)
    s = stream(tree)
    assert (s.num_images, s.image_size, s.classes) == (9, 16, ["cat", "dog", "emu"])
    assert torch.equal(s.labels, memory.labels)
    order = epoch_order(9, 5, 1)
    want = memory.images[order[:8]]  # two batches of 4, the last partial one dropped
    for workers in (0, 2):
        got = list(s.batches(1, 5, 4, num_workers=workers))
        assert [b.shape for b in got] == [(4, 3, 16, 16)] * 2 and got[0].dtype == torch.uint8
        assert torch.equal(torch.cat(got), want)
    assert torch.equal(torch.cat(list(s.batches(1, 5, 4, skip=1))), want[4:])
    rank1 = torch.cat(list(s.batches(1, 5, 4, rank=1, world=2)))
    assert torch.equal(rank1, torch.cat([want[2:4], want[6:8]]))
    assert s.channel_stats() == memory.channel_stats()


def test_a_streamed_archive_keeps_its_extraction_while_the_stream_lives(tree, tmp_path):
    s = stream(write_zip(tree, tmp_path / "d.zip"), image_size=8)
    assert s.image_size == 8 and s.root.is_dir()
    assert torch.cat(list(s.batches(0, 0, 3))).shape == (9, 3, 8, 8)


def test_arrays_are_always_in_memory(tmp_path):
    from dcl_core.data.sources import open_images

    x, y = expected_arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    for source in (tmp_path / "d.npz", "builtin:digits"):
        assert isinstance(open_images(DatasetSpec(source=str(source), in_memory=False), DataEnv()), ImageSet)


def test_streaming_mixed_sizes_needs_image_size(tmp_path):
    draw((1, 2, 3), 0, size=(16, 16)).save(tmp_path / "a.png")
    draw((1, 2, 3), 0, size=(20, 20)).save(tmp_path / "b.png")
    with pytest.raises(UserError, match=r"b\.png is 20x20.*set image_size"):
        stream(tmp_path)
    s = stream(tmp_path, image_size=16)
    assert torch.equal(torch.cat(list(s.batches(0, 0, 2))).sort(dim=0).values,
                       load(tmp_path, image_size=16).images.sort(dim=0).values)


def test_a_corrupt_file_met_while_streaming_is_named_or_replaced(tree):
    data = (tree / "dog" / "img1.png").read_bytes()
    (tree / "dog" / "img1.png").write_bytes(data[: len(data) // 2])  # a valid header, truncated pixels
    (tree / "dog" / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match=r"dog/bad\.png.*set skip_corrupt: true"):
        stream(tree)  # without image_size every header is read up front
    s = stream(tree, image_size=16)  # with it, nothing is read until a batch needs the file
    with pytest.raises(UserError, match=r"dog/(bad|img1)\.png.*set skip_corrupt: true"):
        list(s.batches(0, 0, 10))
    skipping = stream(tree, skip_corrupt=True)
    assert skipping.num_images == 9  # bad.png dropped by its header; img1.png is found when decoded
    memory = load(tree, skip_corrupt=True)
    assert memory.num_images == 8
    images = torch.cat(list(skipping.batches(0, 0, 9)))  # img1.png stands in for the next image
    assert {tuple(im.flatten().tolist()) for im in images} == {tuple(im.flatten().tolist()) for im in memory.images}
