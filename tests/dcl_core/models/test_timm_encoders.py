"""timm encoders (`timm:NAME`): built from the registry, trained a step, exported, loaded back."""

from __future__ import annotations

import json

import pytest
import torch

from dcl_core.config import TrainConfig
from dcl_core.errors import UserError
from dcl_core.export.encoder import load_encoder
from dcl_core.models.encoders import build_encoder
from dcl_core.training.train import fit

pytestmark = pytest.mark.slow

timm = pytest.importorskip("timm")

# Tiny stand-ins for real architectures: a ResNet with one block a stage, a one-block ViT.
TINY_RESNET = {"encoder": "timm:resnet18", "encoder_kwargs": {"layers": [1, 1, 1, 1]}}
TINY_VIT = {"encoder": "timm:vit_tiny_patch16_224",
            "encoder_kwargs": {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}}


def tiny(**overrides) -> TrainConfig:
    base = dict(dataset={"source": "builtin:digits", "max_images": 64, "image_size": 16}, batch_size=16,
                epochs=1, max_steps=1, projection_hidden_dim=32, projection_dim=16, device="cpu", seed=1)
    return TrainConfig.model_validate({**base, **overrides})


@pytest.mark.parametrize("spec,feature_dim", [(TINY_RESNET, 512), (TINY_VIT, 32)], ids=["resnet", "vit"])
def test_timm_encoder_trains_exports_and_loads_back_to_identical_features(tmp_path, spec, feature_dim):
    result = fit(tiny(**spec, optimizer="adamw", warmup_epochs=0.5), tmp_path)
    assert result.steps == 1 and result.warnings == []
    meta = json.loads((tmp_path / "encoder.json").read_text())
    assert meta["encoder"] == spec["encoder"] and meta["encoder_kwargs"] == spec["encoder_kwargs"]
    assert meta["timm_model"] == spec["encoder"].removeprefix("timm:")
    assert meta["timm_version"] == timm.__version__
    assert meta["feature_dim"] == feature_dim and meta["small_stem"] is False

    encoder = load_encoder(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "encoder.safetensors")
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in saved.items())
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    rebuilt = build_encoder(spec["encoder"], False, 16, spec["encoder_kwargs"]).eval()
    rebuilt.load_state_dict(saved)
    with torch.no_grad():
        features = encoder(x)
        assert features.shape == (3, feature_dim)
        assert torch.equal(features, rebuilt(x))
        assert torch.equal(features, load_encoder(tmp_path)(x))


def test_vit_image_size_is_passed_through():
    vit = build_encoder(TINY_VIT["encoder"], False, 24, TINY_VIT["encoder_kwargs"]).eval()
    assert vit.patch_embed.img_size == (24, 24)
    assert vit(torch.randn(1, 3, 24, 24)).shape == (1, 32)


def test_feature_dim_is_read_from_the_model():
    # MobileNetV3 has a hidden head layer: its pooled features are head_hidden_size, not num_features.
    model = build_encoder("timm:mobilenetv3_small_050", False, 32)
    assert model.feature_dim == model.head_hidden_size != model.num_features
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, model.feature_dim)


def test_vit_with_sgd_and_no_warmup_gets_a_warning_in_the_result(tmp_path):
    result = fit(tiny(**TINY_VIT, optimizer="sgd"), tmp_path)
    assert len(result.warnings) == 1
    assert "vision transformer" in result.warnings[0] and "'sgd'" in result.warnings[0]
    assert "no warmup" in result.warnings[0] and "adamw" in result.warnings[0]
    assert json.loads((tmp_path / "encoder.json").read_text())["warnings"] == result.warnings


def test_unknown_timm_model_fails_at_run_time_with_close_matches():
    with pytest.raises(UserError, match=r"no model 'resnet51'.*did you mean .*timm:resnet50"):
        build_encoder("timm:resnet51", False, 32)


def test_timm_kwargs_that_do_not_fit_are_a_user_error():
    with pytest.raises(UserError, match="encoder_kwargs.*wings"):
        build_encoder("timm:resnet18", False, 32, {"wings": 2})
