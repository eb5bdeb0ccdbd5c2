"""Trained encoders as files: `encoder.safetensors` + `encoder.json` and their loader, and the
other formats (ONNX, a Hugging Face-style folder).

The public names are importable from here (`from dcl_core.export import load_encoder`); each is
imported from its module on first use, so importing this package alone stays cheap (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "FORMAT_VERSION": "encoder",
    "WEIGHTS_NAME": "encoder",
    "META_NAME": "encoder",
    "save_encoder": "encoder",
    "load_encoder": "encoder",
    "read_meta": "encoder",
    "encoder_state_dict": "encoder",
    "write_hf_folder": "hf",
    "export_onnx": "onnx",
    "export_formats": "formats",
}
"""Public name -> the module of this package that defines it."""

__all__ = list(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
