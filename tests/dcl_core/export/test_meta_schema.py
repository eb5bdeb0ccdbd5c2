"""A malformed encoder.json is one UserError naming its fields (issue 21, finding 7), never a
raw ValueError or KeyError from the rebuild."""

from __future__ import annotations

import json

import pytest

from dcl_core.errors import UserError
from dcl_core.export.encoder import META_NAME, load_encoder, save_encoder
from tests.dcl_core.export.test_export import make_meta, trained_like


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoder")
    save_encoder(trained_like("convnet_small", False), folder, make_meta("convnet_small", False))
    return folder, json.loads((folder / META_NAME).read_text())


@pytest.mark.parametrize("change, field", [
    ({"encoder_kwargs": "depth=2"}, "encoder_kwargs"),
    ({"image_size": "thirty-two"}, "image_size"),
    ({"mean": [0.5]}, "mean"),
    ({"std": [0.0, 0.2, 0.2]}, "std"),
    ({"encoder": "timm:vit_tiny_patch16_224", "encoder_kwargs": {"act_layer": "nope"}}, "act_layer"),
    ({"encoder": "resnet1000"}, "encoder"),
    ({"feature_dim": "256"}, "feature_dim"),
])
def test_a_malformed_encoder_json_is_one_clear_error(saved, tmp_path, change, field):
    folder, meta = saved
    (tmp_path / "encoder.safetensors").write_bytes((folder / "encoder.safetensors").read_bytes())
    (tmp_path / META_NAME).write_text(json.dumps({**meta, **change}))
    with pytest.raises(UserError, match=f"not a usable encoder.json.*{field}"):
        load_encoder(tmp_path)


def test_a_valid_encoder_json_still_loads(saved):
    folder, _ = saved
    assert load_encoder(folder).feature_dim == 256
