"""The encoder registry: every encoder a config can name is one entry of `ENCODERS`.

This module imports no torch at module level (dcl_core.config validates `encoder` with it, and
the API imports the config); each builder imports what it needs when it runs. Every builder
returns a randomly initialised module (nothing is downloaded) mapping (B, 3, H, W) float images
to (B, feature_dim) features, with an int attribute `feature_dim`:

- "resnet18", "resnet34" (512) and "resnet50" (2048): torchvision's ResNets (He et al. 2016)
  with `fc` replaced by `nn.Identity`, so the state_dict keys are torchvision's minus `fc.*`.
  `small_stem` (SimCLR and DCL on CIFAR) swaps conv1 for a 3x3 stride-1 convolution and drops
  the max-pool, keeping the spatial resolution of small images.
- "convnet_small" (256): four conv3x3-BN-ReLU blocks with stride-2 downsampling, then global
  average pooling; quick on a CPU, for tests and smoke runs. With `small_stem` its first block
  has stride 1.
- "timm:NAME": a family entry: any model of the `timm` package, created with
  `pretrained=False, num_classes=0` (so it returns pooled features), `img_size` set to the
  training image size for the models that take one (ViT, DeiT, Swin...), plus the config's
  `encoder_kwargs`. Its feature size is read from the model. Needs `pip install 'dcl-service[timm]'`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dcl_core.errors import UserError
from dcl_core.models.timm_kwargs import check_timm_kwargs

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ENCODERS", "Encoder", "build_encoder", "check_encoder_kwargs", "check_encoder_name", "encoder_entry", "resolve_small_stem"]

TIMM_PREFIX = "timm:"
# timm's model names: lower-case letters, digits, `_` and `.` (a pretrained tag, ignored here).
_TIMM_NAME = re.compile(r"^[a-z0-9][a-z0-9_.]{0,127}$")
# kwargs that would download weights or change what the model returns: the builder owns them.
_RESERVED_KWARGS = ("pretrained", "num_classes", "pretrained_cfg", "pretrained_cfg_overlay",
                    "checkpoint_path", "features_only", "global_pool")


@dataclass(frozen=True)
class Encoder:
    """One registry entry. `build(name, small_stem, image_size, kwargs)` returns the module;
    `family`: the key is a prefix and the rest of the name picks the model;
    `small_stem`/`kwargs`: whether the entry honours those config fields."""

    build: Callable[[str, bool, "int | None", dict], "nn.Module"]
    help: str
    small_stem: bool = True
    kwargs: bool = False
    family: bool = False


def _torchvision_resnet(name: str, small_stem: bool, image_size: int | None, kwargs: dict) -> "nn.Module":
    import torchvision
    from torch import nn

    model = getattr(torchvision.models, name)(weights=None)
    feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    if small_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    model.feature_dim = feature_dim
    return model


def _convnet_small(name: str, small_stem: bool, image_size: int | None, kwargs: dict) -> "nn.Module":
    from dcl_core.models.convnet import ConvNetSmall

    return ConvNetSmall(small_stem=small_stem)


def _import_timm():
    try:
        import timm
    except ImportError as exc:
        raise UserError("timm encoders need the timm package: pip install 'dcl-service[timm]'") from exc
    return timm


def _timm(name: str, small_stem: bool, image_size: int | None, kwargs: dict) -> "nn.Module":
    timm = _import_timm()
    model_name = name[len(TIMM_PREFIX):]
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else \
            "; `python -c 'import timm; print(timm.list_models(\"*vit*\"))'` lists the names"
        raise UserError(f"encoder {name!r}: timm {timm.__version__} has no model {model_name!r}{hint}")
    args = {"pretrained": False, "num_classes": 0, **kwargs}
    try:
        if image_size is not None and "img_size" not in kwargs:
            try:
                model = timm.create_model(model_name, img_size=image_size, **args)
            except TypeError as exc:  # a model without an input size of its own (a convnet)
                if "img_size" not in str(exc):
                    raise
                model = timm.create_model(model_name, **args)
        else:
            model = timm.create_model(model_name, **args)
    except MemoryError:
        raise UserError(f"encoder {name!r}: encoder_kwargs {kwargs} make a model too large for this worker's "
                        "memory; use a smaller embed_dim, depth or img_size") from None
    except Exception as exc:  # KeyError, TypeError, AssertionError...: a value timm could not use
        raise UserError(f"encoder {name!r}: timm could not build it with encoder_kwargs {kwargs} "
                        f"at image size {image_size}: {type(exc).__name__}: {exc}; fix encoder_kwargs") from exc
    # With num_classes=0 the forward returns the pre-logits features: head_hidden_size when the
    # model has a hidden head layer (e.g. MobileNetV3), else num_features.
    model.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    model.build_meta = {"timm_model": model_name, "timm_version": timm.__version__}
    return model


ENCODERS: dict[str, Encoder] = {
    "resnet18": Encoder(_torchvision_resnet, "torchvision ResNet-18, 512 features"),
    "resnet34": Encoder(_torchvision_resnet, "torchvision ResNet-34, 512 features"),
    "resnet50": Encoder(_torchvision_resnet, "torchvision ResNet-50, 2048 features"),
    "convnet_small": Encoder(_convnet_small, "four conv blocks, 256 features (tests, smoke runs)"),
    TIMM_PREFIX: Encoder(_timm, "timm:NAME, any timm model (timm:resnet50, timm:vit_small_patch16_224, ...)",
                         small_stem=False, kwargs=True, family=True),
}


def check_encoder_name(name: str) -> str:
    """`name` if the registry has it (a `timm:NAME` only needs a well-formed NAME: whether timm
    has that model is checked where timm is installed, when the run starts); else ValueError
    with the close matches."""
    if name in ENCODERS and not ENCODERS[name].family:
        return name
    for prefix, entry in ENCODERS.items():
        if entry.family and name.startswith(prefix):
            model_name = name[len(prefix):]
            if not _TIMM_NAME.match(model_name):
                raise ValueError(f"{name!r}: after {prefix!r} give a timm model name in lower case, "
                                 "e.g. timm:resnet50 or timm:vit_small_patch16_224")
            return name
    names = [n for n, e in ENCODERS.items() if not e.family]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise ValueError(f"unknown encoder {name!r}; {hint}choose one of {names}, or timm:NAME for a timm "
                     f"model (e.g. {TIMM_PREFIX}{name.lower()} if {name!r} is a timm name)")


def check_encoder_kwargs(name: str, kwargs: dict, image_size: int | None = None) -> dict:
    """`kwargs` if the (valid) encoder `name` takes them at this image size; else ValueError
    naming the fix."""
    entry = encoder_entry(name)
    if kwargs and not entry.kwargs:
        raise ValueError(f"encoder {name!r} takes no encoder_kwargs (only timm:NAME encoders do)")
    reserved = sorted(set(kwargs) & set(_RESERVED_KWARGS))
    if reserved:
        raise ValueError(f"encoder_kwargs {reserved} are set by dcl itself (random init, pooled features); remove them")
    if entry.kwargs:
        check_timm_kwargs(kwargs, image_size)
    return kwargs


def encoder_entry(name: str) -> Encoder:
    """The registry entry for a name that `check_encoder_name` accepts; UserError otherwise."""
    try:
        check_encoder_name(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if name in ENCODERS:
        return ENCODERS[name]
    return next(e for prefix, e in ENCODERS.items() if e.family and name.startswith(prefix))


def resolve_small_stem(setting: bool | None, image_size: int, name: str | None = None) -> bool:
    """The config's `small_stem`: an explicit choice wins; None means on for images <= 64 px.
    Always False for an encoder that has no such option (timm models)."""
    if name is not None and not encoder_entry(name).small_stem:
        return False
    if setting is None:
        return image_size <= 64
    return bool(setting)


def build_encoder(name: str, small_stem: bool, image_size: int | None = None,
                  kwargs: dict[str, Any] | None = None) -> "nn.Module":
    """A randomly initialised encoder by name; see the module docstring for the choices.

    The returned module has an int attribute `feature_dim` and maps (B, 3, H, W) -> (B, feature_dim).
    Raises UserError for an unknown name or unusable kwargs.
    """
    entry = encoder_entry(name)
    kwargs = dict(kwargs or {})
    try:
        check_encoder_kwargs(name, kwargs, image_size)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return entry.build(name, bool(small_stem) and entry.small_stem, image_size, kwargs)
