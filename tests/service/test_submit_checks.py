"""Configs that could only fail (or exhaust a worker's memory) at run time are refused at submit
with a 422 naming the field (issue 21, finding 6): timm kwargs checked without building the
model, a model-size estimate against DCL_MAX_MODEL_PARAMS, floats bounded to sane ranges."""

from __future__ import annotations

import pytest

from dcl_core.config import TrainConfig
from dcl_core.errors import UserError
from dcl_core.models.encoders import build_encoder
from tests.service.test_jobs_api import submit

VIT = "timm:vit_tiny_patch16_224"


@pytest.mark.parametrize("config, field, words", [
    ({"encoder": VIT, "encoder_kwargs": {"act_layer": "<anything>"}}, "config.encoder_kwargs", "act_layer"),
    ({"encoder": VIT, "encoder_kwargs": {"img_size": 10**9}}, "config.encoder_kwargs", "img_size"),
    ({"encoder": VIT, "encoder_kwargs": {"img_size": 1024, "patch_size": 2}}, "config.encoder_kwargs", "patches"),
    ({"encoder": VIT, "encoder_kwargs": {"depth": 2.5}}, "config.encoder_kwargs", "depth"),
    ({"encoder": VIT, "encoder_kwargs": {"in_chans": 1}}, "config.encoder_kwargs", "in_chans"),
    ({"encoder": VIT, "encoder_kwargs": {"embed_dim": 16384, "depth": 48}}, "config.encoder_kwargs",
     "DCL_MAX_MODEL_PARAMS"),
    ({"method": "dclw", "sigma": 1e308}, "config.sigma", "100"),
    ({"weight_decay": 1e300}, "config.weight_decay", "10"),
    ({"lr": 1e300}, "config.lr", "100"),
    ({"max_runtime_s": 1e-300}, "config.max_runtime_s", "1"),
])
def test_configs_that_fail_at_run_time_are_refused_at_submit(alice, config, field, words):
    r = submit(alice, config)
    assert r.status_code == 422, r.text
    body = r.json()
    assert field in [e["field"] for e in body["errors"]], body
    assert words in body["detail"]


def test_a_sane_timm_config_is_taken(alice):
    config = {"encoder": VIT, "encoder_kwargs": {"depth": 2, "embed_dim": 96, "act_layer": "gelu", "img_size": 32},
              "max_runtime_s": 1.0}
    assert submit(alice, config).status_code == 202


def test_patches_follow_the_dataset_image_size():
    small = {"encoder": VIT, "encoder_kwargs": {"patch_size": 1},
             "dataset": {"source": "builtin:digits", "image_size": 32}}
    assert TrainConfig.model_validate(small).encoder_kwargs == {"patch_size": 1}  # 1,024 patches
    with pytest.raises(ValueError, match="patches"):
        TrainConfig.model_validate({**small, "dataset": {"source": "builtin:digits", "image_size": 256}})


def test_a_run_time_timm_failure_is_a_user_error_naming_the_kwargs():
    pytest.importorskip("timm")
    with pytest.raises(UserError, match="encoder_kwargs.*KeyError"):  # was a raw KeyError
        build_encoder(VIT, False, 32, {"depth": 1, "norm_layer": "nope"})
