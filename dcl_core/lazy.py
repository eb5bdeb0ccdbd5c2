"""Registries name heavy things ("dcl_core.training.losses:DCLLoss") as strings, imported on first
use, so that reading a registry (the API does) never imports torch."""

from __future__ import annotations

import importlib
from typing import Any


def load(path: str) -> Any:
    """The object `module:attribute` names."""
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise ValueError(f"{path!r} is not 'module:attribute'")
    return getattr(importlib.import_module(module), attribute)
