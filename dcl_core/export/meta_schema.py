"""The schema of `encoder.json` (and of a Hugging Face folder's `config.json`), checked before
anything is built from it: a hand-edited or damaged file is one UserError naming its fields,
never a KeyError or ValueError from deep inside the rebuild."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from dcl_core.config import EncoderKwarg
from dcl_core.errors import UserError
from dcl_core.models.encoders import check_encoder_kwargs, check_encoder_name

Triple = Annotated[list[float], Field(min_length=3, max_length=3)]


class EncoderMeta(BaseModel):
    """The fields a load reads; the others (config, metrics, versions) are kept as they are."""

    model_config = ConfigDict(extra="allow", strict=True)

    encoder: str = Field(max_length=140)
    small_stem: bool
    image_size: int = Field(ge=8, le=4096)
    mean: Triple
    std: Triple
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    feature_dim: int = Field(ge=1, le=1 << 20)
    encoder_kwargs: dict[str, EncoderKwarg] | None = None

    @field_validator("encoder")
    @classmethod
    def _known(cls, name: str) -> str:
        return check_encoder_name(name)

    @field_validator("std")
    @classmethod
    def _positive(cls, std: list[float]) -> list[float]:
        if min(std) <= 0:
            raise ValueError("must be three numbers above 0 (the images are divided by them)")
        return std

    @field_validator("encoder_kwargs")
    @classmethod
    def _usable(cls, kwargs: dict | None, info: ValidationInfo) -> dict | None:
        if kwargs and "encoder" in info.data:
            check_encoder_kwargs(info.data["encoder"], kwargs, info.data.get("image_size"))
        return kwargs


def check_meta(meta: dict, where: str) -> None:
    """UserError naming every unusable field of the encoder metadata read from `where`."""
    try:
        EncoderMeta.model_validate(meta)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}"
                             for e in exc.errors())
        raise UserError(f"{where}: not a usable encoder.json ({problems}); save the encoder again, "
                        "or fix these fields") from None
