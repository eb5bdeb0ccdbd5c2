"""Sweeps: one pretrain job per point of a grid over TrainConfig fields, and their table.

A sweep job (`dcl_core.jobs.sweep`) `{"type": "sweep", "config": BASE, "grid": {"method": ["dcl", "simclr"],
"batch_size": [32, 64], "seed": [0, 1]}, "evaluate": EVAL}` expands to the product of the
grid's values (keys are field paths, dotted for nested fields: `"augment.crop_scale"`), each
point applied to BASE and validated up front. The table (`sweep_result`) has one row a point
and, for the points that differ only in `seed`, the mean and std of every score.

Imports only pydantic (the API validates and expands sweeps without torch).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import statistics
from typing import Any

from pydantic import BaseModel, ValidationError

from dcl_core.config import TrainConfig

SCORES = ("linear_top1", "knn_top1", "recall_at_1", "recall_at_5", "recall_at_10", "map_at_r")
"""What an evaluated pretrain job's `result["scores"]` may hold (fractions, 0..1)."""


def check_path(path: str) -> None:
    """`path` names a TrainConfig field (dotted for nested ones), or ValueError says why not."""
    model: type[BaseModel] | None = TrainConfig
    walked = []
    for part in path.split("."):
        if model is None:
            raise ValueError(f"{'.'.join(walked)} has no fields; {path!r} cannot be swept")
        if part == "evaluate" and model is TrainConfig:
            raise ValueError("evaluate cannot be swept; set the sweep's own evaluate block")
        field = model.model_fields.get(part)
        if field is None:
            where = ".".join(walked) or "the training config"
            raise ValueError(f"{path!r}: {where} has no field {part!r}; choose one of {sorted(model.model_fields)}")
        walked.append(part)
        model = _model_in(field.annotation)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):  # Optional[Model]
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def get_path(data: dict, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def member_config(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """`base` with `params` (path -> value) applied; ValueError naming the grid point if invalid."""
    data = base.model_dump(mode="json")
    for path, value in params.items():
        *parents, last = path.split(".")
        node = data
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"grid point {json.dumps(params)}: {problems}") from None


# ---- the table ------------------------------------------------------------------------


def sweep_result(swept: list[str], members: list[dict]) -> dict[str, Any]:
    """The sweep's result from its members' job rows (`id`, `status`, `spec`, `result`,
    `error`), in grid order: `{"swept", "rows", "summary"}` (see the README's Sweeps section)."""
    rows = []
    for job in members:
        config = (job.get("spec") or {}).get("config") or {}
        succeeded = job["status"] == "succeeded"
        scores = ((job.get("result") or {}).get("scores") or {}) if succeeded else {}
        error = None if succeeded else (job.get("error") or (job["status"] if job["status"] == "cancelled" else None))
        rows.append({"job_id": job["id"], "status": job["status"],
                     "params": {path: get_path(config, path) for path in swept},
                     "scores": {k: v for k, v in scores.items() if isinstance(v, (int, float))}, "error": error})
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(json.dumps(_without_seed(row["params"]), sort_keys=True), []).append(row)
    summary = []
    for group in groups.values():
        scored = [r["scores"] for r in group if r["scores"]]
        names = [name for name in SCORES if any(name in s for s in scored)]
        names += sorted({name for s in scored for name in s} - set(names))
        mean, std = {}, {}
        for name in names:
            values = [float(s[name]) for s in scored if name in s]
            mean[name] = statistics.fmean(values)
            std[name] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append({"params": _without_seed(group[0]["params"]), "n": len(scored), "mean": mean, "std": std})
    return {"swept": list(swept), "rows": rows, "summary": summary}


def _without_seed(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "seed"}


def score_names(result: dict[str, Any]) -> list[str]:
    found = {name for row in result["rows"] for name in row["scores"]}
    return [n for n in SCORES if n in found] + sorted(found - set(SCORES))


def results_csv(result: dict[str, Any]) -> str:
    """One line a member: job_id, status, the swept fields, the scores, the error."""
    scores = score_names(result)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["job_id", "status", *result["swept"], *scores, "error"])
    for row in result["rows"]:
        params = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in row["params"].values()]
        writer.writerow([row["job_id"], row["status"], *params,
                         *(row["scores"].get(name, "") for name in scores), row["error"] or ""])
    return out.getvalue()
