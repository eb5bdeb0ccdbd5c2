"""Encoders (torchvision ResNets, the small convnet) and the projection head."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from dcl_core.errors import UserError
from dcl_core.models.encoders import ENCODERS, build_encoder, check_encoder_name, resolve_small_stem
from dcl_core.models.heads import ProjectionHead

FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "convnet_small": 256}


def test_every_configurable_encoder_is_buildable():
    assert set(FEATURE_DIMS) == {name for name, entry in ENCODERS.items() if not entry.family}


@pytest.mark.parametrize(
    "name,small_stem,size,batch",
    [
        ("resnet18", True, 32, 2),
        ("resnet18", False, 64, 2),
        ("resnet34", True, 32, 2),
        ("resnet34", False, 96, 2),
        ("resnet50", True, 32, 1),
        ("resnet50", False, 64, 1),
        ("convnet_small", True, 32, 4),
        ("convnet_small", False, 96, 4),
    ],
)
def test_output_shape_and_feature_dim(name, small_stem, size, batch):
    torch.manual_seed(0)
    encoder = build_encoder(name, small_stem=small_stem).eval()
    assert isinstance(encoder.feature_dim, int)
    assert encoder.feature_dim == FEATURE_DIMS[name]
    with torch.no_grad():
        out = encoder(torch.randn(batch, 3, size, size))
    assert out.shape == (batch, encoder.feature_dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_resnet18_state_dict_keys_are_torchvisions_minus_fc():
    ours = set(build_encoder("resnet18", small_stem=False).state_dict())
    reference = set(torchvision.models.resnet18(weights=None).state_dict())
    assert ours == {key for key in reference if not key.startswith("fc.")}
    assert {"fc.weight", "fc.bias"} <= reference
    # The small stem keeps the same names (conv1 is swapped, not renamed).
    assert set(build_encoder("resnet18", small_stem=True).state_dict()) == ours


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_small_stem(name):
    encoder = build_encoder(name, small_stem=True)
    conv1 = encoder.conv1
    assert (conv1.in_channels, conv1.out_channels) == (3, 64)
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.padding == (1, 1)
    assert conv1.bias is None
    assert isinstance(encoder.maxpool, nn.Identity)
    assert isinstance(encoder.fc, nn.Identity)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_stem(name):
    encoder = build_encoder(name, small_stem=False)
    assert encoder.conv1.kernel_size == (7, 7) and encoder.conv1.stride == (2, 2)
    assert isinstance(encoder.maxpool, nn.MaxPool2d)


def test_small_stem_keeps_resolution():
    # At 32 px the small stem leaves 4x4 maps before pooling; the ImageNet stem leaves 1x1.
    small = build_encoder("resnet18", small_stem=True).eval()
    large = build_encoder("resnet18", small_stem=False).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        trunk = nn.Sequential(*list(small.children())[:-2])
        assert trunk(x).shape[-2:] == (4, 4)
        trunk = nn.Sequential(*list(large.children())[:-2])
        assert trunk(x).shape[-2:] == (1, 1)


def test_convnet_small_stem_is_stride_one():
    small = build_encoder("convnet_small", small_stem=True)
    large = build_encoder("convnet_small", small_stem=False)
    assert small.features[0][0].stride == (1, 1)
    assert large.features[0][0].stride == (2, 2)
    assert [block[0].out_channels for block in small.features] == [32, 64, 128, 256]


def test_encoders_are_randomly_initialised():
    torch.manual_seed(0)
    a = build_encoder("resnet18", small_stem=True).conv1.weight
    torch.manual_seed(1)
    b = build_encoder("resnet18", small_stem=True).conv1.weight
    assert not torch.equal(a, b)


def test_unknown_encoder_lists_choices():
    with pytest.raises(UserError, match="unknown encoder 'vit_b'") as info:
        build_encoder("vit_b", small_stem=False)
    for name in FEATURE_DIMS:
        assert name in str(info.value)
    assert "timm:vit_b" in str(info.value)


def test_unknown_encoder_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean 'resnet18'"):
        check_encoder_name("resnet81")
    with pytest.raises(ValueError, match="timm model name in lower case"):
        check_encoder_name("timm:")
    assert check_encoder_name("timm:convnext_atto") == "timm:convnext_atto"


def test_timm_models_have_no_small_stem():
    assert resolve_small_stem(True, 32, "timm:resnet18") is False
    assert resolve_small_stem(None, 32, "resnet18") is True


@pytest.mark.parametrize(
    "setting,size,expected",
    [(None, 8, True), (None, 32, True), (None, 64, True), (None, 65, False), (None, 96, False),
     (None, 224, False), (True, 224, True), (False, 32, False)],
)
def test_resolve_small_stem(setting, size, expected):
    assert resolve_small_stem(setting, size) is expected


def test_encoder_gradients_flow():
    encoder = build_encoder("convnet_small", small_stem=True)
    head = ProjectionHead(encoder.feature_dim, 64, 16)
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    head(encoder(x)).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in list(encoder.named_parameters()) + list(head.named_parameters()):
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- projection head


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_projection_head_shape_and_structure(num_layers):
    head = ProjectionHead(32, 48, 8, num_layers=num_layers)
    assert head(torch.randn(5, 32)).shape == (5, 8)
    layers = list(head)
    assert len(layers) == 3 * (num_layers - 1) + 1
    dim = 32
    for i in range(num_layers - 1):
        linear, norm, relu = layers[3 * i : 3 * i + 3]
        assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (dim, 48)
        assert isinstance(norm, nn.BatchNorm1d) and norm.num_features == 48
        assert isinstance(relu, nn.ReLU)
        dim = 48
    last = layers[-1]
    assert isinstance(last, nn.Linear) and (last.in_features, last.out_features) == (dim, 8)
    assert last.bias is not None


def test_single_layer_head_is_one_linear():
    head = ProjectionHead(16, 999, 4, num_layers=1)
    assert len(head) == 1 and isinstance(head[0], nn.Linear)
    assert (head[0].in_features, head[0].out_features) == (16, 4)


@pytest.mark.parametrize(
    "kwargs",
    [dict(in_dim=0, hidden_dim=8, out_dim=4), dict(in_dim=8, hidden_dim=-1, out_dim=4),
     dict(in_dim=8, hidden_dim=8, out_dim=0), dict(in_dim=8, hidden_dim=8, out_dim=4, num_layers=0),
     dict(in_dim=8.0, hidden_dim=8, out_dim=4)],
)
def test_projection_head_validates(kwargs):
    with pytest.raises(ValueError):
        ProjectionHead(**kwargs)


def test_projection_head_gradients_flow():
    head = ProjectionHead(16, 32, 8, num_layers=3)
    x = torch.randn(6, 16, requires_grad=True)
    head(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.parameters())
