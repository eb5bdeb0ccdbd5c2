""""Did you mean" for a misspelt config field, at any depth: pydantic says only "Extra inputs are
not permitted" for `bach_size`; this finds the model that error is about (by walking its `loc`
through the schema) and names its closest field names. No torch: the API uses it."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel

__all__ = ["with_field_hints", "unknown_field_message"]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (`X | None`, `list[X]`, `Annotated[...]`...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        for model in _models_in(arg):
            if model not in found:
                found.append(model)
    return found


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def model_at(roots: list[type[BaseModel]], loc: list[Any]) -> type[BaseModel] | None:
    """The model whose field `loc[-1]` would be, following `loc[:-1]` from `roots`; None when the
    path leaves the schema (a dict key, a free-form object)."""
    candidates = list(roots)
    for part in loc[:-1]:
        if isinstance(part, int):
            continue  # a list index: the item's models are already among the candidates
        named = [m for m in candidates if m.__name__ == part]
        if named:  # a union member's tag, as pydantic puts it in a loc
            candidates = named
            continue
        holder = next((m for m in candidates if part in _field_names(m)), None)
        if holder is None:
            return None
        info = next(i for n, i in holder.model_fields.items() if (i.alias or n) == part)
        candidates = _models_in(info.annotation)
        if not candidates:
            return None
    return candidates[0] if candidates else None


def unknown_field_message(name: str, model: type[BaseModel] | None) -> str:
    """"unknown field 'bach_size': did you mean 'batch_size'?" (or the fields it has, when few)."""
    if model is None:
        return f"unknown field {name!r}"
    names = _field_names(model)
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
    if close:
        return f"unknown field {name!r}: did you mean {' or '.join(repr(c) for c in close)}?"
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"unknown field {name!r}; the fields here are {shown}"


def with_field_hints(errors: list[dict[str, Any]], roots: list[type[BaseModel]], skip: int = 0) -> list[dict[str, Any]]:
    """pydantic's errors, each `extra_forbidden` one's message replaced by one naming the close
    field names. `skip`: leading loc parts that are not part of the schema (FastAPI's "body")."""
    out = []
    for err in errors:
        loc = list(err.get("loc", ()))[skip:]
        if err.get("type") == "extra_forbidden" and loc:
            err = {**err, "msg": unknown_field_message(loc[-1], model_at(roots, loc))}
        out.append(err)
    return out
