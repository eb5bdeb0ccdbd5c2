"""`embed`: a succeeded pretrain job's encoder's features for every image of a dataset."""

from __future__ import annotations

from typing import Literal

from dcl_core.config import EmbedConfig
from dcl_core.jobs.base import (
    AdmissionContext, EncoderModel, EncoderRef, JobKind, Labels, OneDevice, check_encoder_job, check_sources,
)


class EmbedJob(OneDevice, EmbedConfig, Labels):
    type: Literal["embed"] = "embed"
    encoder_job: EncoderRef
    encoder_model: EncoderModel = None

    def embed_config(self) -> EmbedConfig:
        """What the engine runs: the spec without what only the service reads (the encoder job,
        its model reference, the labels)."""
        return EmbedConfig.model_validate(self.model_dump(include=set(EmbedConfig.model_fields)))


def admit(spec: EmbedJob, context: AdmissionContext) -> None:
    check_sources(spec, context)
    check_encoder_job(spec.encoder_job, context)


KIND = JobKind("embed", EmbedJob, admit, can_stop=False, order=2,
               about="a pretrain job's encoder's features for every image of a dataset")
