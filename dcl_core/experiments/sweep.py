"""Sweeps: one pretrain job per point of a grid over TrainConfig fields, and their table.

A sweep job (`dcl_core.jobs.sweep`) `{"type": "sweep", "config": BASE, "grid": {"method": ["dcl", "simclr"],
"batch_size": [32, 64], "seed": [0, 1]}, "evaluate": EVAL}` expands to the product of the
grid's values (keys are field paths, dotted for nested fields: `"augment.crop_scale"`), each
point applied to BASE and validated up front. The table (`sweep_result`) has one row a point
and, for the points that differ only in `seed`, the mean and std of every score; where the
grid crosses `method` with `seed`, the paired difference between methods over matching seeds,
per other setting, with its 95 % t-interval. Members are named after their point (`member_name`).

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
from dcl_core.experiments.stats import mean_ci95

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


_PREFIX = {"batch_size": "b"}
_BARE = {"method", "encoder"}


def member_name(params: dict[str, Any]) -> str:
    """A member's default name from its grid point: {"method": "dcl", "batch_size": 32, "seed": 1}
    -> "dcl b32 seed1" (method and encoder bare, batch size as b, other fields by their name)."""
    parts = []
    for path, value in params.items():
        leaf = path.rsplit(".", 1)[-1]
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(text if leaf in _BARE else f"{_PREFIX.get(leaf, leaf)}{text}")
    name = "".join(ch if ch.isprintable() else "?" for ch in " ".join(parts)).strip()
    return name if len(name) <= 100 else name[:99] + "…"


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
    return {"swept": list(swept), "rows": rows, "summary": summary, "differences": paired_differences(swept, rows)}


def _without_seed(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "seed"}


def paired_differences(swept: list[str], rows: list[dict]) -> list[dict[str, Any]]:
    """Where the grid crosses `method` with `seed`: for each setting of the other swept fields and
    each pair of methods (a before b in the grid), every score's mean of a - b over the seeds both
    scored, `n` such pairs and the 95 % t-interval `ci95` ([low, high], None under two pairs)."""
    if "method" not in swept or "seed" not in swept:
        return []
    settings: dict[str, dict[str, Any]] = {}
    scored: dict[tuple[str, str], dict[str, dict]] = {}  # (setting, method) -> seed -> scores
    methods: list[str] = []
    for row in rows:
        params = row["params"]
        others = {k: v for k, v in params.items() if k not in ("method", "seed")}
        key, method = json.dumps(others, sort_keys=True), json.dumps(params.get("method"))
        settings.setdefault(key, others)
        if method not in methods:
            methods.append(method)
        if row["scores"]:
            scored.setdefault((key, method), {})[json.dumps(params.get("seed"))] = row["scores"]
    out = []
    for key, others in settings.items():
        for i, a in enumerate(methods):
            for b in methods[i + 1:]:
                by_seed_a, by_seed_b = scored.get((key, a), {}), scored.get((key, b), {})
                entry: dict[str, Any] = {"params": others, "a": json.loads(a), "b": json.loads(b),
                                         "n": {}, "mean": {}, "ci95": {}}
                seeds = [seed for seed in by_seed_a if seed in by_seed_b]
                names = [n for n in SCORES if any(n in by_seed_a[s] and n in by_seed_b[s] for s in seeds)]
                names += sorted({n for s in seeds for n in by_seed_a[s] if n in by_seed_b[s]} - set(names))
                for name in names:
                    diffs = [float(by_seed_a[s][name]) - float(by_seed_b[s][name]) for s in seeds
                             if name in by_seed_a[s] and name in by_seed_b[s]]
                    mean, ci = mean_ci95(diffs)
                    entry["n"][name], entry["mean"][name] = len(diffs), mean
                    entry["ci95"][name] = list(ci) if ci is not None else None
                out.append(entry)
    return out


def score_names(result: dict[str, Any]) -> list[str]:
    found = {name for row in result["rows"] for name in row["scores"]}
    return [n for n in SCORES if n in found] + sorted(found - set(SCORES))


def results_csv(result: dict[str, Any]) -> str:
    """One line a member: job_id, status, the swept fields, the scores, the error. With paired
    differences, one more line each after the members: status `difference`, method `a - b`, the
    scores' mean differences, and per score `_pairs`, `_ci95_low`, `_ci95_high` ("n/a" under two
    pairs) in columns of their own at the end."""
    scores = score_names(result)
    differences = result.get("differences") or []
    extra = [f"{name}_{part}" for name in scores for part in ("pairs", "ci95_low", "ci95_high")] if differences else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["job_id", "status", *result["swept"], *scores, "error", *extra])
    for row in result["rows"]:
        params = [_cell(v) for v in row["params"].values()]
        writer.writerow([row["job_id"], row["status"], *params,
                         *(row["scores"].get(name, "") for name in scores), row["error"] or "", *[""] * len(extra)])
    for diff in differences:
        params = {**{k: "" for k in result["swept"]}, **diff["params"], "method": f"{diff['a']} - {diff['b']}"}
        tail = []
        for name in scores:
            ci = diff["ci95"].get(name)
            n = diff["n"].get(name)
            tail += [n if n is not None else 0, *(ci if ci is not None else ["n/a" if n else ""] * 2)]
        writer.writerow(["", "difference", *(_cell(params[k]) for k in result["swept"]),
                         *(diff["mean"].get(name, "") for name in scores), "", *tail])
    return out.getvalue()


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value
