"""`sweep`: one pretrain job per point of a grid over TrainConfig fields (its children), scored
when each ends, and their table (`dcl_core.experiments.sweep`)."""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from dcl_core.config import EvaluateConfig, TrainConfig
from dcl_core.jobs.base import AdmissionContext, JobKind, Labels, Refusal, check_batch_fits, check_sources
from dcl_core.jobs.pretrain import PretrainJob
from dcl_core.experiments.sweep import check_path, grid_points, member_config

MAX_POINTS = 256
"""Most grid points (child jobs) one sweep may make."""


class SweepJob(Labels):
    type: Literal["sweep"] = "sweep"
    config: TrainConfig = TrainConfig()
    grid: dict[str, list[Any]] = Field(
        min_length=1,
        description="Field path -> values; one pretrain job per combination, e.g. "
        '{"method": ["dcl", "simclr"], "batch_size": [32, 64], "seed": [0, 1]}.',
    )
    evaluate: EvaluateConfig | None = Field(
        default=None, description="Scores every member when its training ends (else config.evaluate)."
    )

    @field_validator("grid")
    @classmethod
    def _valid_grid(cls, grid: dict[str, list[Any]], info: ValidationInfo) -> dict[str, list[Any]]:
        for path, values in grid.items():
            check_path(path)
            if not values:
                raise ValueError(f"{path}: give at least one value")
        count = math.prod(len(values) for values in grid.values())
        if count > MAX_POINTS:
            raise ValueError(f"{count} grid points, more than the {MAX_POINTS} one sweep may have; "
                             "split it into several sweeps")
        base = info.data.get("config")
        if base is not None:  # else the config's own error is reported
            for params in grid_points(grid):
                member_config(base, params)
        return grid

    def points(self) -> list[dict[str, Any]]:
        return grid_points(self.grid)

    def child_specs(self) -> list[PretrainJob]:
        """The pretrain jobs the sweep makes (the job registry's `has_children` contract)."""
        return [PretrainJob(config=config) for config in self.member_configs()]

    def member_configs(self) -> list[TrainConfig]:
        """Every member's config, in grid order (the last key varies fastest)."""
        base = self.config if self.evaluate is None else self.config.model_copy(update={"evaluate": self.evaluate})
        return [member_config(base, params) for params in self.points()]

def admit(spec: SweepJob, context: AdmissionContext) -> None:
    """Each member is checked like a job of its own; a problem is named by its grid point."""
    for params, member in zip(spec.points(), spec.child_specs()):
        try:
            sizes = check_sources(member, context)
            check_batch_fits(member.config, sizes.get("config.dataset"))
        except Refusal as exc:
            if exc.status != 422:
                raise
            raise Refusal("grid", f"grid point {json.dumps(params)}: {exc.field}: {exc.message}") from None


KIND = JobKind("sweep", SweepJob, admit, can_stop=True, has_children=True, order=3,
               about="one pretrain job per point of a grid over TrainConfig fields, and their table")
