"""The timm `encoder_kwargs` a config may give, checked without timm or torch (the API has
neither): the type and range of the kwargs timm's vision models share, the activation names
timm resolves, and a cheap estimate of a transformer's size from them, so that a model that
could only fail (or exhaust a worker's memory) at run time is refused at submit.

Kwargs not listed here go through to `timm.create_model`; a failure there is a UserError
naming `encoder_kwargs` (`encoders._timm`).
"""

from __future__ import annotations

import math

ACT_LAYERS = frozenset({
    "celu", "elu", "gelu", "gelu_tanh", "hard_mish", "hard_sigmoid", "hard_swish", "hardsigmoid", "hardswish",
    "identity", "leaky_relu", "mish", "prelu", "quick_gelu", "relu", "relu6", "selu", "sigmoid", "silu",
    "swish", "tanh",
})
"""The names timm 1.x's `get_act_layer` resolves (timm.layers.create_act)."""

MAX_IMG_SIZE = 1024
MAX_TOKENS = 16384
"""Patches per image (img_size / patch_size, squared): attention memory grows with its square."""

_INTS = {"embed_dim": 16384, "depth": 256, "num_heads": 256, "patch_size": MAX_IMG_SIZE, "img_size": MAX_IMG_SIZE}
_FLOATS = {"mlp_ratio": 64.0, "drop_rate": 1.0, "drop_path_rate": 1.0, "attn_drop_rate": 1.0,
           "proj_drop_rate": 1.0, "pos_drop_rate": 1.0, "patch_drop_rate": 1.0, "init_values": 10.0}
_VIT = {"embed_dim": 768, "depth": 12, "mlp_ratio": 4.0, "patch_size": 16}
"""ViT-Base's values, for the kwargs an estimate needs and a config leaves out."""


def check_timm_kwargs(kwargs: dict, image_size: int | None = None) -> None:
    """ValueError naming `encoder_kwargs.KEY` and the fix for a value timm could not use;
    `image_size`: the training images' side (the builder's img_size unless the kwargs set it)."""
    for key, value in kwargs.items():
        field = f"encoder_kwargs.{key}"
        if key.endswith("act_layer"):
            if not isinstance(value, str) or value not in ACT_LAYERS:
                raise ValueError(f"{field}: {value!r} is not an activation timm knows; use one of "
                                 f"{', '.join(sorted(ACT_LAYERS))}")
        elif key == "in_chans" and value != 3:
            raise ValueError(f"{field}: the images are given as RGB (3 channels); leave in_chans unset")
        elif key in _INTS:
            pair = key.endswith("_size") and isinstance(value, list) and len(value) == 2  # [height, width]
            for side in value if pair else [value]:
                if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= _INTS[key]:
                    raise ValueError(f"{field}: must be a whole number from 1 to {_INTS[key]}, got {value!r}")
        elif key in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= _FLOATS[key]:
                raise ValueError(f"{field}: must be a number from 0 to {_FLOATS[key]:g}, got {value!r}")
    tokens = patch_tokens(kwargs, image_size)
    if tokens is not None and tokens > MAX_TOKENS:
        raise ValueError(f"encoder_kwargs: img_size / patch_size gives {tokens} patches per image, over "
                         f"{MAX_TOKENS}; use a smaller img_size or a larger patch_size")


def _side(value) -> int:
    return int(max(value)) if isinstance(value, list) else int(value)


def patch_tokens(kwargs: dict, image_size: int | None) -> int | None:
    """Patches per image of a patch-embedding model, when its kwargs say it has patches and
    the image side is known."""
    if "img_size" not in kwargs and ("patch_size" not in kwargs or image_size is None):
        return None
    side = _side(kwargs.get("img_size", image_size))
    patch = _side(kwargs.get("patch_size", _VIT["patch_size"]))
    return math.ceil(side / patch) ** 2


def estimated_params(kwargs: dict) -> int | None:
    """About how many parameters a transformer with these kwargs has (blocks of attention and
    MLP: depth * (4 + 2 * mlp_ratio) * embed_dim^2), or None when the kwargs set neither its width
    nor its depth (a stock timm model: its own size)."""
    if "embed_dim" not in kwargs and "depth" not in kwargs:
        return None
    width = int(kwargs.get("embed_dim", _VIT["embed_dim"]))
    depth = int(kwargs.get("depth", _VIT["depth"]))
    ratio = float(kwargs.get("mlp_ratio", _VIT["mlp_ratio"]))
    return int(depth * (4 + 2 * ratio) * width * width)
