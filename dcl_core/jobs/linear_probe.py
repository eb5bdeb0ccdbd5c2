"""`linear_probe`: score a succeeded pretrain job's encoder on labelled data."""

from __future__ import annotations

from typing import Literal

from dcl_core.config import ProbeConfig
from dcl_core.jobs.base import (
    AdmissionContext, EncoderModel, EncoderRef, JobKind, Labels, OneDevice, check_encoder_job, check_sources,
)


class ProbeJob(OneDevice, ProbeConfig, Labels):
    type: Literal["linear_probe"] = "linear_probe"
    encoder_job: EncoderRef
    encoder_model: EncoderModel = None

    def probe_config(self) -> ProbeConfig:
        """What the engine runs: the spec without what only the service reads (the encoder job,
        its model reference, the labels)."""
        return ProbeConfig.model_validate(self.model_dump(include=set(ProbeConfig.model_fields)))


def admit(spec: ProbeJob, context: AdmissionContext) -> None:
    check_sources(spec, context)
    check_encoder_job(spec.encoder_job, context)


KIND = JobKind("linear_probe", ProbeJob, admit, can_stop=False, order=1,
               about="score a pretrain job's encoder on labelled data")
