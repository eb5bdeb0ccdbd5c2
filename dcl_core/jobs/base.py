"""What every job type declares: its `JobKind` (the spec model, whether it stops mid-run, whether
it makes children) and its admission rule, a pure function `admit(spec, context)` that refuses
a job the service could only fail, naming the field and the fix. The context answers what the
rule needs to know of the world (datasets, other jobs, the server's files); the API provides it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple, Protocol

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, field_validator

from dcl_core.data.catalog import SPLIT_SIZES
from dcl_core.config import DatasetSpec, Strict, TrainConfig


class Refusal(Exception):
    """A job the service will not take: `field` (a dotted path, "config.batch_size"), what is wrong
    and the fix. `status`: 422 (unusable field), 404 (a job or dataset it names is not there) or 409
    (it names one in the wrong state)."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


class AdmissionContext(Protocol):
    owner: str
    allow_download: bool

    def dataset_images(self, dataset_id: str) -> int | None:
        """How many images the owner's uploaded dataset holds (None: unknown); LookupError when the
        owner has no such dataset."""

    def torchvision_missing(self, name: str, split: str) -> bool:
        """Whether torchvision's files for this dataset split are absent on the server."""

    def job_state(self, job_id: str) -> tuple[str, str] | None:
        """(type, status) of one of the owner's jobs, or None."""


MAX_TAGS = 20
MAX_NOTES_BYTES = 10_000


def _printable(text: str) -> str:
    """No control characters (a name is one line) and nothing UTF-8 cannot hold (a lone surrogate)."""
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text):
        raise ValueError("must be one line of printable text (no control characters)")
    return text


def _notes(text: str) -> str:
    if "\x00" in text or any(unicodedata.category(ch) == "Cs" for ch in text):
        raise ValueError("contains a NUL byte or a lone surrogate; send plain UTF-8 text")
    size = len(text.encode("utf-8"))
    if size > MAX_NOTES_BYTES:
        raise ValueError(f"is {size} bytes of UTF-8, more than the {MAX_NOTES_BYTES} allowed; shorten it")
    return text


JobName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
                    AfterValidator(_printable)]
Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Notes = Annotated[str, AfterValidator(_notes)]


def unique_tags(tags: list[str]) -> list[str]:
    """Tags once each, in the order given."""
    return list(dict.fromkeys(tags))


class Labels(Strict):
    """What a person calls a job and notes about it: not part of what runs (excluded from the
    spec's dump, so the stored spec never holds them), and changeable later (PATCH /v1/jobs/ID)."""

    name: JobName | None = Field(default=None, exclude=True, description="A name for the job, 1-100 characters.")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS, exclude=True, description=(
        f"Up to {MAX_TAGS} tags, each 1-64 of A-Z a-z 0-9 _ . : -; filter with GET /v1/jobs?tag=..."))
    notes: Notes | None = Field(default=None, exclude=True, description=(
        f"Free text, up to {MAX_NOTES_BYTES} bytes of UTF-8."))

    @field_validator("tags")
    @classmethod
    def _once_each(cls, tags: list[str]) -> list[str]:
        return unique_tags(tags)

    def labels(self) -> dict[str, Any]:
        return {"name": self.name, "tags": list(self.tags), "notes": self.notes}


@dataclass(frozen=True)
class JobKind:
    name: str
    spec: type[BaseModel]
    """The request model; its `type` field is `Literal[name]` (the union's discriminator). A spec
    that runs on a worker has `device`, `devices` and `max_runtime_s`."""
    admit: Callable[[Any, AdmissionContext], None]
    can_stop: bool
    """Honours `should_stop` mid-run (cancel and time caps take effect before the end)."""
    has_children: bool = False
    """Makes child jobs at submit (its spec's `child_specs()`), runs on no worker itself, and its
    status and result follow its children's (settled by the control plane's lifecycle)."""
    about: str = ""
    order: int = 100
    """Where it comes in lists (the API schema, the CLI's help)."""

    @property
    def runs_on_worker(self) -> bool:
        return not self.has_children


def dataset_fields(model: BaseModel, path: str = "") -> Iterator[tuple[str, DatasetSpec]]:
    """Every DatasetSpec inside a spec, with its field path (`config.dataset`)."""
    if isinstance(model, DatasetSpec):
        yield path, model
        return
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from dataset_fields(value, f"{path}.{name}" if path else name)


def check_sources(spec: BaseModel, context: AdmissionContext) -> dict[str, int]:
    """Each dataset the spec names must be readable where it runs; returns the image count of
    each whose size is known, by field path."""
    sizes: dict[str, int] = {}
    for path, dataset in dataset_fields(spec):
        where = f"{path}.source"
        if dataset.kind == "path":
            raise Refusal(where, f"{dataset.source!r} is a local path, which the service cannot read; "
                                 "upload it with POST /v1/datasets and name it as dataset:ID")
        size = SPLIT_SIZES.get(dataset.source, {}).get(dataset.split)
        if dataset.kind == "dataset":
            dataset_id = dataset.source.partition(":")[2]
            try:
                size = context.dataset_images(dataset_id)
            except LookupError:
                raise Refusal(where, f"dataset {dataset_id} not found; upload it with POST /v1/datasets") from None
        if dataset.kind == "torchvision":
            if dataset.download and not context.allow_download:
                raise Refusal(f"{path}.download", "this server does not download datasets (DCL_ALLOW_DOWNLOAD "
                                                  "is off); upload the data with POST /v1/datasets instead")
            name = dataset.source.partition(":")[2]
            if not dataset.download and context.torchvision_missing(name, dataset.split):
                raise Refusal(where, f"{dataset.source} ({dataset.split} split) is not on this server: ask its "
                                     f"operator to put torchvision's {name} files in the torchvision folder "
                                     "(DCL_TORCHVISION_ROOT)"
                                     + (", or set download: true" if context.allow_download else "")
                                     + ", or upload the data with POST /v1/datasets")
        if isinstance(size, int):
            sizes[path] = min(size, dataset.max_images or size)
    return sizes


def check_batch_fits(config: TrainConfig, images: int | None, field: str = "config.batch_size") -> None:
    if images is not None and config.batch_size > images:
        raise Refusal(field, f"{config.batch_size} is more than the {images} images of {config.dataset.source}; "
                             f"use batch_size <= {images}")


MODEL_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
"""A registered model's name: 1-100 letters, digits, `_`, `.`, `-` (never `@` or `/`, which refer to its versions)."""
MODEL_ALIAS = r"[A-Za-z][A-Za-z0-9_.-]{0,63}"
"""An alias (`production`): starts with a letter, so it is never mistaken for a version number."""
ENCODER_REF = rf"^(?:[A-Za-z0-9_-]{{1,64}}|model:{MODEL_NAME}(?:@{MODEL_ALIAS}|/[1-9][0-9]{{0,8}}))$"
"""What `encoder_job` takes: a job id, or a registered model, `model:NAME@ALIAS` or `model:NAME/VERSION`."""


class ModelRef(NamedTuple):
    """`model:NAME@ALIAS` or `model:NAME/VERSION`, parsed."""

    name: str
    alias: str | None
    version: int | None


def parse_model_ref(ref: str) -> ModelRef | None:
    """The model an `encoder_job` names, or None when it is a job id (or not an ENCODER_REF)."""
    if not ref.startswith("model:") or re.fullmatch(ENCODER_REF, ref) is None:
        return None
    name, at, alias = ref[len("model:"):].partition("@")
    if at:
        return ModelRef(name, alias, None)
    name, _, version = name.partition("/")
    return ModelRef(name, None, int(version))


def _check_encoder_ref(value: str) -> str:
    if re.fullmatch(ENCODER_REF, value) is None:
        raise ValueError("must be a job id (job_...) or a registered model: model:NAME@ALIAS or model:NAME/VERSION")
    return value


EncoderRef = Annotated[str, Field(
    min_length=1, max_length=200, json_schema_extra={"pattern": ENCODER_REF}, description=(
        "A succeeded pretrain job: its id, or a registered model version, `model:NAME@ALIAS` or "
        "`model:NAME/VERSION` (resolved when the job is submitted; the job id is stored here and the "
        "reference in `encoder_model`).")), AfterValidator(_check_encoder_ref)]
EncoderModel = Annotated[str | None, Field(max_length=200, description=(
    "Set by the service: the registered model `encoder_job` named at submit time (model:NAME@ALIAS), if any."))]


def check_encoder_job(encoder_job: str, context: AdmissionContext) -> None:
    state = context.job_state(encoder_job)
    if state is None:
        raise Refusal("encoder_job", f"encoder_job {encoder_job} not found", 404)
    kind, status = state
    if kind != "pretrain":
        raise Refusal("encoder_job", f"encoder_job {encoder_job} is a {kind} job; name a pretrain job", 409)
    if status != "succeeded":
        raise Refusal("encoder_job", f"encoder_job {encoder_job} is {status}; name a pretrain job that "
                                     "succeeded (wait for it to finish)", 409)


class OneDevice:
    """A job on its own `device`, one of them, with no run-time cap of its own."""

    devices = 1
    max_runtime_s = None


def runs_on(device: str) -> str:
    """The kind of queue a job on `device` goes to: `cpu`, or `gpu` (`auto` too: it runs on a GPU
    when the worker has one)."""
    return "cpu" if str(device) == "cpu" else "gpu"
