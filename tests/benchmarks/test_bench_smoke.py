"""benchmarks/dcl_vs_simclr.py: its held-out split, and a whole `--smoke` run in a subprocess."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "dcl_vs_simclr.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("dcl_vs_simclr", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_holdout_is_stratified_and_disjoint_from_the_probe_training_images(bench, tmp_path):
    from dcl_core.data.sources import DataEnv, load_images

    # 30 images of class 0 and 20 of class 1; pixel (0, 0) holds the image's index.
    x = np.zeros((50, 8, 8, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(50)
    y = np.array([0] * 30 + [1] * 20)
    source = tmp_path / "folder.npz"
    np.savez(source, x=x, y=y)
    args = bench.parse_args(["--data", str(source), "--test-fraction", "0.2",
                             "--out", str(tmp_path / "out")])
    train_spec, test_spec, summary = bench.prepare_splits(args, DataEnv(), tmp_path / "out")

    train, test = load_images(train_spec, DataEnv()), load_images(test_spec, DataEnv())
    train_ids = set(train.images[:, 0, 0, 0].tolist())
    test_ids = set(test.images[:, 0, 0, 0].tolist())
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(range(50))
    assert np.bincount(test.labels.numpy()).tolist() == [6, 4]  # 20% of each class
    assert summary["train_images"] == 40 and summary["test_images"] == 10


def test_max_images_takes_a_random_subset_not_the_first_class(bench, tmp_path):
    from dcl_core.data.sources import DataEnv, load_images

    x = np.zeros((100, 8, 8), dtype=np.uint8)
    source = tmp_path / "sorted.npz"
    np.savez(source, x=x, y=np.repeat(np.arange(4), 25))  # sorted by class, like an image folder
    args = bench.parse_args(["--data", str(source), "--max-images", "40",
                             "--out", str(tmp_path / "out")])
    train_spec, _, _ = bench.prepare_splits(args, DataEnv(), tmp_path / "out")
    labels = load_images(train_spec, DataEnv()).labels
    assert len(labels) == 40 and len(labels.unique()) == 4


@pytest.mark.slow
def test_smoke_run_writes_table_plot_and_results(tmp_path):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--threads", "1", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    runs = {(r["method"], r["batch_size"]) for r in results["rows"]}
    assert runs == {("random", None)} | {(m, b) for m in ("simclr", "dcl", "dclw") for b in (8, 16)}
    for row in results["rows"]:
        assert 0.0 <= row["linear_top1"] <= 1.0 and 0.0 <= row["knn_top1"] <= 1.0
    assert results["data"]["test_split"] == "builtin:digits split test"
    assert "| DCL |" in done.stdout and "| SimCLR (NT-Xent) |" in done.stdout
    with Image.open(out / "dcl_vs_simclr.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > plot.size[1] > 100
