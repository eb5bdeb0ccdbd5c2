"""Facts about the named datasets, without torch: how many images each split holds and which
files torchvision reads for it under its root (its own layout). The engine loads from them;
the service checks a job against them at submit (it never imports torch).
"""

from __future__ import annotations

from pathlib import Path

DIGITS_TRAIN = 1437
"""builtin:digits: the first 1,437 of scikit-learn's 1,797 images are `train`, the rest `test`."""

SPLIT_SIZES = {
    "builtin:digits": {"train": DIGITS_TRAIN, "test": 1797 - DIGITS_TRAIN},
    "torchvision:CIFAR10": {"train": 50000, "test": 10000},
    "torchvision:CIFAR100": {"train": 50000, "test": 10000},
    "torchvision:STL10": {"train": 5000, "test": 8000},
    "torchvision:MNIST": {"train": 60000, "test": 10000},
    "torchvision:FashionMNIST": {"train": 60000, "test": 10000},
    "torchvision:SVHN": {"train": 73257, "test": 26032},
}

TORCHVISION_FOLDERS = {
    "CIFAR10": "cifar-10-batches-py",
    "CIFAR100": "cifar-100-python",
    "STL10": "stl10_binary",
    "MNIST": "MNIST/raw",
    "FashionMNIST": "FashionMNIST/raw",
    "SVHN": ".",
}
"""Where each torchvision dataset's files lie under the root."""

_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
TORCHVISION_FILES = {
    "CIFAR10": {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    "CIFAR100": {"train": ("train",), "test": ("test",)},
    "STL10": {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")},
    "MNIST": _MNIST_FILES,
    "FashionMNIST": _MNIST_FILES,
    "SVHN": {"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)},
}
"""The files torchvision reads for a split, in TORCHVISION_FOLDERS[name]."""


def missing_torchvision_files(root: Path, name: str, split: str) -> list[Path]:
    """The files of `name`'s `split` that are not under `root` (empty: it is there)."""
    folder = Path(root) / TORCHVISION_FOLDERS[name]
    return [folder / f for f in TORCHVISION_FILES[name][split] if not (folder / f).is_file()]
