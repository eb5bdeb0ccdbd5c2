"""Export and load trained encoders: `encoder.safetensors` + `encoder.json`.

The weights file holds the encoder only (no projection head), with torchvision's parameter
names for the ResNets (`conv1.weight`, `layer1.0.bn1.running_mean`, ...; no `fc.*`), so it
loads into a plain `torchvision.models.resnet18()` whose `fc` is `nn.Identity()` (and, for the
small stem, whose `conv1` is a 3x3 stride-1 conv and `maxpool` is `nn.Identity()`).

`encoder.json` says how to rebuild and feed it: the architecture (for `timm:NAME`, also the
timm model, version and `encoder_kwargs`), the stem, the feature dimension, the input size, the
normalisation, the training config, the final metrics and the sha256 of the weights file.
Nothing here unpickles anything: weights are read with safetensors and metadata with json.

A Hugging Face-style folder (`config.json` + `model.safetensors`, written by
`dcl_core.export.hf`) holds the same two things under the names a model hub expects;
`load_encoder` reads either layout. `encoder.onnx` is written by `dcl_core.export.onnx`.

Both files are written atomically (a temp file in the same folder, fsync, `os.replace`), the
weights first: a reader that finds `encoder.json` finds the weights it describes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

import dcl_core
from dcl_core.errors import UserError
from dcl_core.export.meta_schema import check_meta
from dcl_core.files import write_bytes_atomic, write_json_atomic

__all__ = [
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "META_NAME",
    "save_encoder",
    "load_encoder",
    "read_meta",
    "encoder_state_dict",
]

FORMAT_VERSION = 1
WEIGHTS_NAME = "encoder.safetensors"
META_NAME = "encoder.json"
HF_WEIGHTS_NAME = "model.safetensors"
HF_META_NAME = "config.json"
_REQUIRED_META = ("encoder", "small_stem", "image_size", "mean", "std")
# Prefixes that wrappers add to parameter names: torch.compile's OptimizedModule and DDP.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


# --------------------------------------------------------------------------- save


def _unwrap(module: nn.Module) -> nn.Module:
    """The module inside torch.compile's OptimizedModule and DDP wrappers."""
    while True:
        inner = getattr(module, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            module = inner
            continue
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
            continue
        return module


def _strip_prefixes(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                stripped = True
    # torch.compile of a submodule leaves `_orig_mod.` inside a name too.
    return name.replace("._orig_mod.", ".")


def _clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cleaned: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        key = _strip_prefixes(name)
        if key in cleaned:
            raise ValueError(f"two parameters map to {key!r} after removing wrapper prefixes")
        cleaned[key] = tensor
    return cleaned


def encoder_state_dict(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights as saved: wrapper prefixes removed, detached, contiguous, on the CPU.

    Every tensor is its own copy, so tensors that share storage in the module (safetensors
    refuses those) are written independently.
    """
    state = _clean_state_dict(_unwrap(encoder).state_dict())
    return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in state.items()}


def save_encoder(encoder: nn.Module, out_dir: str | Path, meta: dict) -> str:
    """Write `out_dir/encoder.safetensors` and `out_dir/encoder.json`; return the weights' sha256.

    `meta` must hold `encoder` (the name for build_encoder), `small_stem`, `image_size`,
    `mean` and `std` (the normalisation the encoder was trained with); the trainer adds
    `config` (the TrainConfig as a dict) and `metrics` (final). This function adds
    `format_version`, `sha256`, `feature_dim` and `dcl_core_version`.
    """
    from safetensors.torch import save as safetensors_save

    missing = [key for key in _REQUIRED_META if key not in meta]
    if missing:
        raise ValueError(f"save_encoder: meta is missing {missing}")
    out_dir = Path(out_dir)
    inner = _unwrap(encoder)
    feature_dim = getattr(inner, "feature_dim", None)
    if feature_dim is None:
        feature_dim = meta.get("feature_dim")
    if feature_dim is None:
        raise ValueError("save_encoder: the encoder has no `feature_dim` attribute and meta gives none")

    # One metadata key only: safetensors writes several in a random order, and the same
    # weights should give the same file (and sha256) every time.
    data = safetensors_save(encoder_state_dict(encoder), metadata={"format": "pt"})
    sha256 = hashlib.sha256(data).hexdigest()

    record = {**getattr(inner, "build_meta", {}), **meta}
    record.update(
        format_version=FORMAT_VERSION,
        sha256=sha256,
        feature_dim=int(feature_dim),
        dcl_core_version=dcl_core.__version__,
        weights_file=WEIGHTS_NAME,
    )
    record["mean"] = [float(v) for v in meta["mean"]]
    record["std"] = [float(v) for v in meta["std"]]
    record["image_size"] = int(meta["image_size"])
    record["small_stem"] = bool(meta["small_stem"])

    write_bytes_atomic(out_dir / WEIGHTS_NAME, data)
    write_json_atomic(out_dir / META_NAME, record)
    return sha256


# --------------------------------------------------------------------------- load


def locate(path: str | Path) -> tuple[Path, Path]:
    """(weights file, json file) for a run folder, a .safetensors file or an encoder.json."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such encoder file or run folder")
    hf = path.name in (HF_META_NAME, HF_WEIGHTS_NAME) or (
        path.is_dir() and not (path / META_NAME).exists() and (path / HF_META_NAME).exists())
    folder = path if path.is_dir() else path.parent
    if hf:
        weights, meta = folder / HF_WEIGHTS_NAME, folder / HF_META_NAME
    elif path.is_dir():
        weights, meta = path / WEIGHTS_NAME, path / META_NAME
    elif path.suffix == ".json":
        meta = path
        weights = path.with_suffix(".safetensors")
        if not weights.exists():
            weights = path.parent / WEIGHTS_NAME
    else:
        weights = path
        meta = path.with_suffix(".json")
        if not meta.exists():
            meta = path.parent / META_NAME
    if not meta.is_file():
        raise UserError(
            f"{path}: no {META_NAME} found (expected {meta}); point at a run folder holding "
            f"{WEIGHTS_NAME} and {META_NAME} (or a folder holding {HF_META_NAME} and {HF_WEIGHTS_NAME})"
        )
    return weights, meta


def read_meta(path: str | Path) -> dict:
    """The encoder.json of a run folder (or beside a .safetensors file), checked for the fields a load needs."""
    _, meta_path = locate(path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{meta_path}: not a readable encoder.json ({exc})") from exc
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path}: not an encoder.json (expected a JSON object)")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(
            f"{meta_path}: format_version {version!r} is not supported by dcl_core "
            f"{dcl_core.__version__} (expected {FORMAT_VERSION})"
        )
    missing = [key for key in (*_REQUIRED_META, "sha256", "feature_dim") if key not in meta]
    if missing:
        raise UserError(f"{meta_path}: encoder.json is missing {missing}")
    check_meta(meta, str(meta_path))
    return meta


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported encoder, verified against its sha256, in eval mode on `device`.

    `path` is a run folder holding encoder.safetensors + encoder.json, or the .safetensors
    file itself (its .json beside it), or a Hugging Face-style folder (config.json +
    model.safetensors, see `dcl_core.export.hf`). The module has `feature_dim`, `meta` (the json as a
    dict) and `transform`, the evaluation preprocessing for uint8 images (a tensor (B, 3, H, W),
    a numpy array (B, H, W, 3) or (H, W, 3), a PIL image, or a list of them), so:

        enc = load_encoder("run")
        feats = enc(enc.transform(images))   # uint8 images -> (B, feature_dim)
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load

    from dcl_core.models.encoders import build_encoder
    from dcl_core.training.image_ops import EvalTransform

    weights_path, _ = locate(path)
    meta = read_meta(path)
    if not weights_path.is_file():
        raise UserError(f"{weights_path}: weights file not found")
    # Hash and parse the same bytes, so what is loaded is what was verified.
    data = weights_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise UserError(
            f"{weights_path}: sha256 does not match encoder.json: corrupt or modified file"
        )
    try:
        state = safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise UserError(f"{weights_path}: not a safetensors file ({exc})") from exc

    encoder = build_encoder(meta["encoder"], bool(meta["small_stem"]), int(meta["image_size"]),
                            meta.get("encoder_kwargs") or {})
    try:
        encoder.load_state_dict(_clean_state_dict(state), strict=True)
    except RuntimeError as exc:
        built_by = f" (saved with timm {meta['timm_version']})" if "timm_version" in meta else ""
        raise UserError(
            f"{weights_path}: weights do not fit encoder {meta['encoder']!r}{built_by} "
            f"(small_stem={meta['small_stem']}): {exc}"
        ) from exc

    if isinstance(device, str):
        from dcl_core.training.device import resolve_device

        device = resolve_device(device)
    encoder = encoder.to(device).eval()
    if getattr(encoder, "feature_dim", None) != meta["feature_dim"]:
        raise UserError(
            f"{weights_path}: encoder.json says feature_dim {meta['feature_dim']}, "
            f"the rebuilt {meta['encoder']!r} has {getattr(encoder, 'feature_dim', None)}"
        )
    transform = EvalTransform(int(meta["image_size"]), tuple(meta["mean"]), tuple(meta["std"]))
    transform.device = device  # numpy and PIL input is put on the encoder's device
    # Plain attributes, not submodules: they must not enter the encoder's state_dict.
    object.__setattr__(encoder, "meta", meta)
    object.__setattr__(encoder, "transform", transform)
    return encoder
