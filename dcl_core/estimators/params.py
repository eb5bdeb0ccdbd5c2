"""The estimators' parameters, read from the training config: every `TrainConfig` field, the
`AugmentConfig` fields flattened beside them, `image_size` from `DatasetSpec`, and a few of the
estimator's own. Defaults and validation stay in `dcl_core.config` (one place); this module turns
a flat set of parameters into a `TrainConfig` and says which parameter a validation error names.

Torch-free: building the parameter table must not import the engine.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from dcl_core.config import AugmentConfig, DatasetSpec, TrainConfig
from dcl_core.errors import UserError

Section = Literal["train", "augment", "data", "estimator"]

NOT_PARAMETERS = {"method", "dataset", "augment"}
"""TrainConfig fields that are no parameter: the class is the method, `fit(X)` gives the data,
and the augmentation's fields are parameters of their own."""

METHOD_ONLY = {"sigma": "dclw"}
"""Fields that only one method reads: the other estimators do not have them."""

DATA_FIELDS = ("image_size",)
"""DatasetSpec fields that apply to whatever X is given (a folder, an array...)."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    section: Section
    doc: str
    omit_when_none: bool = False
    """The config's default is made by a factory (a dict, a list): None leaves it to the config."""


ESTIMATOR_PARAMS = (
    Param("run_dir", None, "estimator", "Folder for checkpoints, metrics and the encoder files; None: a new "
          "temporary folder each fit, removed with the estimator."),
    Param("warm_start", False, "estimator", "True: fit continues the run in run_dir (or the last fit's folder) "
          "from its last checkpoint, e.g. after a Ctrl-C."),
    Param("verbose", True, "estimator", "Show a progress bar (tqdm.auto: a widget in notebooks) and the engine's "
          "warnings."),
    Param("data_root", None, "estimator", "Folder of torchvision datasets, for X = 'torchvision:NAME'."),
    Param("download", False, "estimator", "Allow downloading a torchvision dataset into data_root."),
    Param("cache_dir", None, "estimator", "Where archives are extracted and decoded images cached; None: nowhere "
          "(a temporary folder)."),
)


def _field_param(name: str, field, section: Section) -> Param:
    factory = field.default is PydanticUndefined
    doc = field.description or ""
    if factory:
        doc = f"{doc} None: the config's default (empty).".strip()
    return Param(name, None if factory else field.default, section, doc, omit_when_none=factory)


def parameters(method: str) -> tuple[Param, ...]:
    """Every parameter of the estimator for `method`, in signature order."""
    found: list[Param] = []
    for name, field in TrainConfig.model_fields.items():
        if name in NOT_PARAMETERS or METHOD_ONLY.get(name, method) != method:
            continue
        found.append(_field_param(name, field, "train"))
    found += [_field_param(name, field, "augment") for name, field in AugmentConfig.model_fields.items()]
    found += [_field_param(name, DatasetSpec.model_fields[name], "data") for name in DATA_FIELDS]
    found += ESTIMATOR_PARAMS
    names = [p.name for p in found]
    clashes = {n for n in names if names.count(n) > 1}
    if clashes:
        raise RuntimeError(f"estimator parameters named twice: {sorted(clashes)}")
    return tuple(found)


def signature(params: tuple[Param, ...]) -> inspect.Signature:
    """`(self, *, name=default, ...)`: what help(), notebooks and scikit-learn's get_params read."""
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return inspect.Signature([self_param] + [
        inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default) for p in params
    ])


def train_config(method: str, params: tuple[Param, ...], values: dict[str, Any], dataset: DatasetSpec) -> TrainConfig:
    """The TrainConfig that `values` (parameter name -> value) describe, training on `dataset`.
    A value the config refuses is a UserError naming the parameter."""
    raw: dict[str, Any] = {"method": method, "dataset": dataset, "augment": {}}
    for p in params:
        value = values[p.name]
        if p.section in ("data", "estimator") or (p.omit_when_none and value is None):
            continue
        if p.section == "augment":
            raw["augment"][p.name] = value
        else:
            raw[p.name] = value
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(describe_errors(exc, values)) from None


def describe_errors(exc: ValidationError, values: dict[str, Any]) -> str:
    """One line a bad parameter: `epochs=0: Input should be greater than or equal to 1`."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        if loc[:1] in (["augment"], ["dataset"]):
            loc = loc[1:]
        name = loc[0] if loc else ""
        message = err["msg"].removeprefix("Value error, ")
        if name in values:
            where = ".".join(loc) if len(loc) > 1 else name
            lines.append(f"  {where}={values[name]!r}: {message}")
        elif name:
            lines.append(f"  {'.'.join(loc)}: {message}")
        else:
            lines.append(f"  {message}")
    return "invalid parameters:\n" + "\n".join(lines)


def docstring(params: tuple[Param, ...]) -> str:
    """A numpydoc-style Parameters section, generated from the table."""
    lines = ["Parameters", "----------"]
    for p in params:
        lines.append(f"{p.name} : default={p.default!r}")
        if p.doc:
            lines.append(f"    {p.doc}")
    return "\n".join(lines)
