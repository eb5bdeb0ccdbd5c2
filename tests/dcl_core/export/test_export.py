"""Export/load of encoders: encoder.safetensors + encoder.json, verified, no pickle."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import safetensors.torch
import torch
import torchvision
from torch import nn

import dcl_core
from dcl_core.errors import UserError
from dcl_core.export.encoder import META_NAME, WEIGHTS_NAME, encoder_state_dict, load_encoder, read_meta, save_encoder
from dcl_core.files import atomic_open, write_json_atomic
from dcl_core.models.encoders import build_encoder


def make_meta(name: str, small_stem: bool, image_size: int = 16) -> dict:
    return {
        "encoder": name,
        "small_stem": small_stem,
        "image_size": image_size,
        "mean": (0.49, 0.48, 0.45),
        "std": (0.25, 0.24, 0.26),
        "config": {"method": "dcl", "encoder": name, "batch_size": 8},
        "metrics": {"loss": -1.25, "knn_acc": 0.5},
    }


def trained_like(name: str, small_stem: bool) -> nn.Module:
    """A random encoder whose BatchNorm statistics moved away from their defaults."""
    torch.manual_seed(0)
    encoder = build_encoder(name, small_stem)
    encoder.train()
    with torch.no_grad():
        for _ in range(2):
            encoder(torch.randn(4, 3, 16, 16) * 2 + 0.5)
    return encoder.eval()


@pytest.fixture(params=[("convnet_small", False), ("resnet18", True)], ids=["convnet_small", "resnet18-small-stem"])
def saved(request, tmp_path):
    name, small_stem = request.param
    encoder = trained_like(name, small_stem)
    sha = save_encoder(encoder, tmp_path, make_meta(name, small_stem))
    return encoder, tmp_path, sha, name, small_stem


def test_round_trip_gives_identical_outputs(saved):
    encoder, run_dir, _, _, _ = saved
    x = torch.randn(3, 3, 16, 16)
    loaded = load_encoder(run_dir)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(encoder(x), loaded(x))
    # Also when pointing at the weights file itself.
    loaded_file = load_encoder(run_dir / WEIGHTS_NAME)
    with torch.no_grad():
        assert torch.equal(encoder(x), loaded_file(x))


def test_json_fields_and_sha256(saved):
    encoder, run_dir, sha, name, small_stem = saved
    meta = json.loads((run_dir / META_NAME).read_text())
    assert meta["format_version"] == 1
    assert meta["sha256"] == sha == hashlib.sha256((run_dir / WEIGHTS_NAME).read_bytes()).hexdigest()
    assert meta["feature_dim"] == encoder.feature_dim
    assert meta["dcl_core_version"] == dcl_core.__version__
    assert meta["encoder"] == name and meta["small_stem"] is small_stem
    assert meta["image_size"] == 16
    assert meta["mean"] == pytest.approx([0.49, 0.48, 0.45]) and meta["std"] == pytest.approx([0.25, 0.24, 0.26])
    assert meta["config"]["method"] == "dcl" and meta["metrics"]["loss"] == -1.25
    assert read_meta(run_dir) == meta == read_meta(run_dir / WEIGHTS_NAME)
    loaded = load_encoder(run_dir)
    assert loaded.meta == meta and loaded.feature_dim == encoder.feature_dim
    # Only the encoder's weights, nothing else (no head, no transform).
    assert set(safetensors.torch.load_file(run_dir / WEIGHTS_NAME)) == set(encoder.state_dict())
    # No temp files left behind.
    assert sorted(p.name for p in run_dir.iterdir()) == [META_NAME, WEIGHTS_NAME]


def test_loaded_encoder_transform_feeds_uint8_images(saved):
    encoder, run_dir, sha, name, small_stem = saved
    loaded = load_encoder(run_dir)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        feats = loaded(loaded.transform(images))
    assert feats.shape == (2, encoder.feature_dim) and feats.dtype == torch.float32
    # The transform is the recorded normalisation.
    mean = torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1)
    expected = (images.float() / 255 - mean) / std
    assert torch.allclose(loaded.transform(images), expected, atol=1e-5)
    # transform/meta are not part of the weights: re-saving the loaded encoder gives the same file.
    assert save_encoder(loaded, run_dir / "again", make_meta(name, small_stem)) == sha


def test_tampered_file_is_rejected(saved):
    _, run_dir, _, _, _ = saved
    path = run_dir / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt or modified file"):
        load_encoder(run_dir)


def test_compile_and_ddp_prefixes_are_stripped(tmp_path):
    encoder = trained_like("convnet_small", True)
    compiled = torch.compile(encoder)  # an OptimizedModule: its state_dict keys start with _orig_mod.
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    save_encoder(compiled, tmp_path, make_meta("convnet_small", True))
    assert set(safetensors.torch.load_file(tmp_path / WEIGHTS_NAME)) == set(encoder.state_dict())

    # A file written by hand with wrapper prefixes still loads.
    for prefix in ("_orig_mod.", "module.", "module._orig_mod."):
        prefixed = {prefix + k: v for k, v in encoder_state_dict(encoder).items()}
        run = tmp_path / prefix.replace(".", "_")
        run.mkdir()
        safetensors.torch.save_file(prefixed, run / WEIGHTS_NAME)
        meta = json.loads((tmp_path / META_NAME).read_text())
        meta["sha256"] = hashlib.sha256((run / WEIGHTS_NAME).read_bytes()).hexdigest()
        (run / META_NAME).write_text(json.dumps(meta))
        loaded = load_encoder(run)
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            assert torch.equal(loaded(x), encoder(x))


def test_plain_torchvision_loads_the_weights(tmp_path):
    """What the README shows: three lines of plain PyTorch, no dcl_core."""
    encoder = trained_like("resnet18", True)
    save_encoder(encoder, tmp_path, make_meta("resnet18", True))

    model = torchvision.models.resnet18()
    model.conv1, model.maxpool, model.fc = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity(), nn.Identity()
    model.load_state_dict(safetensors.torch.load_file(tmp_path / "encoder.safetensors"), strict=True)

    reference = torchvision.models.resnet18().state_dict()
    file_keys = set(safetensors.torch.load_file(tmp_path / "encoder.safetensors"))
    assert file_keys == {k for k in reference if not k.startswith("fc.")}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), encoder(x))


def test_pickled_weights_are_rejected_and_torch_load_is_never_used(tmp_path, monkeypatch):
    encoder = trained_like("convnet_small", False)
    save_encoder(encoder, tmp_path, make_meta("convnet_small", False))

    def no_pickle(*args, **kwargs):
        raise AssertionError("load_encoder must not call torch.load")

    monkeypatch.setattr(torch, "load", no_pickle)
    load_encoder(tmp_path)  # fine without torch.load

    # A pickle (torch.save) under the right name, with a matching sha256, is not accepted.
    buffer = io.BytesIO()
    torch.save(encoder.state_dict(), buffer)
    (tmp_path / WEIGHTS_NAME).write_bytes(buffer.getvalue())
    meta = json.loads((tmp_path / META_NAME).read_text())
    meta["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (tmp_path / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="not a safetensors file"):
        load_encoder(tmp_path)


def test_bad_metadata_is_a_user_error(tmp_path):
    encoder = trained_like("convnet_small", False)
    save_encoder(encoder, tmp_path, make_meta("convnet_small", False))
    meta = json.loads((tmp_path / META_NAME).read_text())

    with pytest.raises(UserError, match="no such encoder"):
        load_encoder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no encoder.json"):
        load_encoder(tmp_path / "empty")

    (tmp_path / META_NAME).write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(UserError, match="format_version"):
        read_meta(tmp_path)

    (tmp_path / META_NAME).write_text(json.dumps({**meta, "encoder": "resnet18"}))
    with pytest.raises(UserError, match="do not fit"):
        load_encoder(tmp_path)

    (tmp_path / META_NAME).write_text("{not json")
    with pytest.raises(UserError, match="not a readable"):
        read_meta(tmp_path)


def test_save_requires_the_metadata_a_load_needs(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        save_encoder(build_encoder("convnet_small", False), tmp_path, {"encoder": "convnet_small"})


def test_write_json_atomic(tmp_path):
    path = tmp_path / "probe.json"
    write_json_atomic(path, {"accuracy": 0.5, "nan": float("nan"), "t": (1, 2), "p": tmp_path})
    assert json.loads(path.read_text()) == {"accuracy": 0.5, "nan": None, "t": [1, 2], "p": str(tmp_path)}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    # A write that fails half-way leaves the old file in place and no temp file behind.
    with pytest.raises(RuntimeError):
        with atomic_open(path, "wb") as handle:
            handle.write(b"{half")
            raise RuntimeError("disk full")
    assert json.loads(path.read_text())["accuracy"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["probe.json"]


def test_the_package_lends_the_public_names_without_importing_torch_itself():
    """`from dcl_core.export import load_encoder`, as the README shows, is the defining module's
    function; importing the package alone imports no torch."""
    import importlib
    import subprocess
    import sys
    from pathlib import Path

    from dcl_core.export import encoder, formats, hf, onnx

    package = importlib.import_module("dcl_core.export")

    assert package.load_encoder is encoder.load_encoder and package.save_encoder is encoder.save_encoder
    assert package.META_NAME == encoder.META_NAME and package.write_hf_folder is hf.write_hf_folder
    assert package.export_formats is formats.export_formats and package.export_onnx is onnx.export_onnx
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018
    code = "import sys, dcl_core.export; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])
