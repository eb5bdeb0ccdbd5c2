"""`linear_probe`: score a succeeded pretrain job's encoder on labelled data."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dcl_core.config import JOB_ID, ProbeConfig
from dcl_core.jobs.base import AdmissionContext, JobKind, Labels, OneDevice, check_encoder_job, check_sources


class ProbeJob(OneDevice, ProbeConfig, Labels):
    type: Literal["linear_probe"] = "linear_probe"
    encoder_job: str = Field(min_length=1, max_length=64, pattern=JOB_ID, description="Id of a succeeded pretrain job.")


def admit(spec: ProbeJob, context: AdmissionContext) -> None:
    check_sources(spec, context)
    check_encoder_job(spec.encoder_job, context)


KIND = JobKind("linear_probe", ProbeJob, admit, can_stop=False, order=1,
               about="score a pretrain job's encoder on labelled data")
