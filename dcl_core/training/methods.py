"""The table of methods (losses): one entry each. `TrainConfig.method` is validated from it and
`dcl_core.training.losses.build_loss` builds from it. Imports no torch (the API reads it).

Adding a loss: its class in its own module (or `losses.py`) and one `Method` entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Method:
    name: str
    loss: str
    """`module:Class` of the loss, an `nn.Module` taking `(z0, z1)`; imported when a run builds it."""
    options: tuple[str, ...]
    """TrainConfig fields passed to the loss's constructor by name (it also gets `gather_distributed`)."""
    about: str


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("dcl", "dcl_core.training.losses:DCLLoss", ("temperature",),
           "decoupled contrastive loss, the positive left out of the denominator (Yeh et al. 2021)"),
    Method("dclw", "dcl_core.training.losses:DCLWLoss", ("temperature", "sigma"),
           "DCL with von Mises-Fisher weighted positives (Yeh et al. 2021)"),
    Method("simclr", "dcl_core.training.losses:NTXentLoss", ("temperature",), "NT-Xent (Chen et al. 2020)"),
)}

MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]
