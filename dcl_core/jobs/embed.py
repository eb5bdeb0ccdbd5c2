"""`embed`: a succeeded pretrain job's encoder's features for every image of a dataset."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dcl_core.config import JOB_ID, EmbedConfig
from dcl_core.jobs.base import AdmissionContext, JobKind, Labels, OneDevice, check_encoder_job, check_sources


class EmbedJob(OneDevice, EmbedConfig, Labels):
    type: Literal["embed"] = "embed"
    encoder_job: str = Field(min_length=1, max_length=64, pattern=JOB_ID)


def admit(spec: EmbedJob, context: AdmissionContext) -> None:
    check_sources(spec, context)
    check_encoder_job(spec.encoder_job, context)


KIND = JobKind("embed", EmbedJob, admit, can_stop=False, order=2,
               about="a pretrain job's encoder's features for every image of a dataset")
