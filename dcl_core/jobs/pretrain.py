"""`pretrain`: train an encoder from a TrainConfig (on one device, or several under torchrun)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dcl_core.config import Strict, TrainConfig
from dcl_core.jobs.base import AdmissionContext, JobKind, Labels, check_batch_fits, check_sources


class Resources(Strict):
    """What a job holds while it runs."""

    gpus: int = Field(default=1, ge=1, le=64, description=(
        "Devices the run trains on, one torchrun process each (DDP; negatives gathered across them); "
        "more than 1 needs a worker started with that many (`dcl worker --gpus 0,1`)."))


class PretrainJob(Labels):
    type: Literal["pretrain"] = "pretrain"
    config: TrainConfig = TrainConfig()
    resources: Resources = Resources()

    @model_validator(mode="after")
    def _batch_splits_over_devices(self) -> "PretrainJob":
        if self.config.batch_size % self.resources.gpus:
            raise ValueError(f"config.batch_size {self.config.batch_size} must be divisible by resources.gpus "
                             f"{self.resources.gpus} (each device trains on an equal share of every batch)")
        return self

    # Where and how long it runs: read by the queue, the worker and its GPU check.
    @property
    def device(self) -> str:
        return self.config.device

    @property
    def devices(self) -> int:
        return self.resources.gpus

    @property
    def max_runtime_s(self) -> float | None:
        return self.config.max_runtime_s


def admit(spec: PretrainJob, context: AdmissionContext) -> None:
    """Its data must be readable by the service, and a batch must fit in it."""
    sizes = check_sources(spec, context)
    check_batch_fits(spec.config, sizes.get("config.dataset"))


KIND = JobKind("pretrain", PretrainJob, admit, can_stop=True, order=0, about="pretrain an encoder (a TrainConfig)")
