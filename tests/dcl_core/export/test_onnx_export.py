"""Deployment formats: encoder.onnx checked with onnxruntime, and the Hugging Face-style folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from dcl_core.cli import main
from dcl_core.config import TrainConfig
from dcl_core.export.encoder import load_encoder
from dcl_core.training.train import fit

pytestmark = pytest.mark.slow

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def tiny(**overrides) -> TrainConfig:
    base = dict(encoder="convnet_small", dataset={"source": "builtin:digits", "max_images": 64, "image_size": 16},
                batch_size=16, epochs=1, max_steps=1, projection_hidden_dim=32, projection_dim=16, device="cpu")
    return TrainConfig.model_validate({**base, **overrides})


def onnx_features(path, images: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["features"], {"images": images.numpy()})[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    result = fit(tiny(export=["onnx", "hf"]), run)
    assert result.warnings == []
    return run


def test_onnx_export_on_request_matches_pytorch_with_a_dynamic_batch(exported):
    meta = json.loads((exported / "encoder.json").read_text())
    record = meta["onnx"]
    assert record["file"] == "encoder.onnx" and record["opset"] == 18
    assert 0 <= record["max_abs_diff"] < 1e-4

    model = onnx.load(str(exported / "encoder.onnx"))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: any batch size

    encoder = load_encoder(exported)
    for batch in (1, 7):
        images = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = encoder(images).numpy()
        np.testing.assert_allclose(onnx_features(exported / "encoder.onnx", images), expected, atol=1e-4)


def test_hf_folder_loads_to_identical_features(exported, tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    for name in ("config.json", "model.safetensors"):  # what a hub download holds
        shutil.copy(exported / name, hub / name)
    config = json.loads((hub / "config.json").read_text())
    assert config["model_type"] == "dcl_encoder" and config["encoder"] == "convnet_small"
    assert (hub / "model.safetensors").read_bytes() == (exported / "encoder.safetensors").read_bytes()

    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = load_encoder(exported)(images)
        assert torch.equal(load_encoder(hub)(images), expected)
        assert torch.equal(load_encoder(hub / "config.json")(images), expected)


def test_dcl_export_writes_onnx_and_hf_for_a_timm_vit(tmp_path, capsys):
    run = tmp_path / "run"
    fit(tiny(encoder="timm:vit_tiny_patch16_224", optimizer="adamw", warmup_epochs=0.5,
             encoder_kwargs={"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}), run)
    assert not (run / "encoder.onnx").exists()
    assert main(["export", "--onnx", "--hf", "--hf-out", str(tmp_path / "hf"), str(run)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["onnx"]["file"] == "encoder.onnx" and printed["onnx"]["max_abs_diff"] < 1e-4

    images = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = load_encoder(run)(images)
        assert torch.equal(load_encoder(tmp_path / "hf")(images), expected)
    np.testing.assert_allclose(onnx_features(run / "encoder.onnx", images), expected.numpy(), atol=1e-4)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["onnx"]["opset"] == 18


def test_dcl_export_needs_a_format(exported, capsys):
    assert main(["export", str(exported)]) == 2
    assert "--onnx" in capsys.readouterr().err
