"""The `dcl` command end to end: in process through `dcl_core.cli.main`, and once as the
installed entry point in a real subprocess. One tiny CPU training run is shared by the tests."""

import io
import json
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dcl_core.cli import main

TINY = {
    "method": "dcl",
    "encoder": "convnet_small",
    "dataset": {"source": "builtin:digits", "max_images": 128},
    "batch_size": 32,
    "epochs": 1,
    "device": "cpu",
}
DIGITS_TEST = '{"source": "builtin:digits", "split": "test"}'


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder from `dcl train tiny.json --out run`, and what the command printed."""
    root = tmp_path_factory.mktemp("cli")
    config = write_json(root / "tiny.json", TINY)
    out = root / "run"
    stdout = io.StringIO()
    with redirect_stdout(stdout):  # capsys is per test; this fixture is per module
        assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    return out, json.loads(stdout.getvalue())


def test_train_writes_encoder_files_and_metrics(trained):
    out, printed = trained
    assert (out / "encoder.safetensors").stat().st_size > 0
    meta = json.loads((out / "encoder.json").read_text())
    assert meta["encoder"] == "convnet_small"
    assert meta["config"]["dataset"]["max_images"] == 128
    assert meta["sha256"] == printed["encoder_sha256"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == printed["steps"] == 128 // 32
    assert np.isfinite(rows[-1]["loss"])


def test_yaml_config_trains_the_same_run_as_json(trained, tmp_path, capsys):
    out, printed = trained
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["encoder_sha256"] == printed["encoder_sha256"]


@pytest.mark.parametrize(
    "change, field",
    [({"batch_size": 1}, "batch_size"), ({"bach_size": 32}, "bach_size"), ({"method": "moco"}, "method")],
)
def test_bad_config_exits_2_naming_the_field(tmp_path, capsys, change, field):
    config = write_json(tmp_path / "bad.json", {**TINY, **change})
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "invalid config" in err and field in err
    assert not (tmp_path / "run").exists()


def test_missing_config_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nowhere.json"
    assert main(["train", str(missing), "--out", str(tmp_path / "run")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_malformed_yaml_exits_2(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("method: [dcl\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_probe_prints_accuracy_on_the_digits_test_split(trained, tmp_path, capsys):
    out, _ = trained
    result_file = tmp_path / "probe.json"
    args = ["probe", "--encoder", str(out), "--train", '{"source": "builtin:digits", "max_images": 300}',
            "--test", DIGITS_TEST, "--device", "cpu", "--out", str(result_file), "--json"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_train"] == 300
    assert printed["num_test"] == 1797 - 1437  # the test split, not the training images
    assert printed["classifier"] == "logistic"
    assert 0.3 < printed["accuracy"] <= 1.0  # chance is 0.1
    assert json.loads(result_file.read_text()) == printed


def test_probe_knn_classifier(trained, capsys):
    out, _ = trained
    args = ["probe", "--encoder", str(out), "--train", "builtin:digits", "--test", DIGITS_TEST,
            "--classifier", "knn", "--device", "cpu", "--json"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["classifier"] == "knn" and printed["num_train"] == 1437


def test_probe_rejects_malformed_json_spec(trained, capsys):
    out, _ = trained
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "--encoder", str(out), "--train", "builtin:digits", "--test", '{"source": '])
    assert exit_info.value.code == 2
    assert "--test" in capsys.readouterr().err


def test_probe_bad_split_exits_2_naming_it(trained, capsys):
    out, _ = trained
    args = ["probe", "--encoder", str(out), "--train", "builtin:digits",
            "--test", '{"source": "builtin:digits", "split": "val"}', "--device", "cpu"]
    assert main(args) == 2
    assert "test.split" in capsys.readouterr().err


def test_probe_missing_encoder_exits_2(tmp_path, capsys):
    args = ["probe", "--encoder", str(tmp_path / "none"), "--train", "builtin:digits", "--test", DIGITS_TEST]
    assert main(args) == 2
    assert "none" in capsys.readouterr().err


def test_embed_writes_features_and_labels(trained, tmp_path):
    out, _ = trained
    target = tmp_path / "feats.npy"
    args = ["embed", "--encoder", str(out), "--data", '{"source": "builtin:digits", "max_images": 50}',
            "--out", str(target), "--device", "cpu"]
    assert main(args) == 0
    feats = np.load(target)
    assert feats.shape == (50, 256) and feats.dtype == np.float32  # convnet_small: 256 features
    assert np.isfinite(feats).all()
    labels = np.load(tmp_path / "feats_labels.npy")
    assert labels.shape == (50,) and set(labels) <= set(range(10))


def test_show_augment_writes_a_grid_png(tmp_path):
    target = tmp_path / "views.png"
    args = ["show-augment", "builtin:digits", "--out", str(target), "--n", "4", "--views", "2", "--image-size", "16"]
    assert main(args) == 0
    with Image.open(target) as image:
        # 4 rows of (original + 2 views), 16 px cells framed by 2 px.
        assert image.format == "PNG"
        assert image.size == (3 * (16 + 2) + 2, 4 * (16 + 2) + 2)


@pytest.mark.slow
def test_dcl_entry_point_trains_in_a_subprocess(tmp_path):
    dcl = shutil.which("dcl", path=str(Path(sys.executable).parent))
    assert dcl is not None, "the dcl entry point is not installed in this environment"
    config = write_json(tmp_path / "tiny.json", {**TINY, "dataset": {"source": "builtin:digits", "max_images": 64}})
    done = subprocess.run([dcl, "train", str(config), "--out", str(tmp_path / "run"), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == 64 // 32
    assert (tmp_path / "run" / "encoder.safetensors").is_file()


def test_probe_knn_k_is_an_option(trained, capsys):
    out, _ = trained
    # Probing the training split against itself: with k=1 every image's nearest neighbour is itself.
    args = ["probe", "--encoder", str(out), "--train", "builtin:digits", "--test", "builtin:digits",
            "--classifier", "knn", "--k", "1", "--batch-size", "64", "--device", "cpu", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0


@pytest.mark.parametrize("command,option,field", [
    ("probe", "--epochs", "epochs"), ("probe", "--k", "k"), ("probe", "--batch-size", "batch_size"),
    ("embed", "--batch-size", "batch_size"),
])
def test_probe_and_embed_options_are_validated_by_the_config(trained, tmp_path, capsys, command, option, field):
    out, _ = trained
    data = ["--train", "builtin:digits", "--test", DIGITS_TEST] if command == "probe" else \
        ["--data", "builtin:digits", "--out", str(tmp_path / "f.npy")]
    assert main([command, "--encoder", str(out), *data, option, "0", "--device", "cpu"]) == 2
    assert f"  {field}:" in capsys.readouterr().err


def test_version(capsys):
    import dcl_core

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dcl {dcl_core.__version__}"
