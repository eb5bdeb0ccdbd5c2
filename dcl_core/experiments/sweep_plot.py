"""A sweep's picture: the score against the swept numeric field (e.g. batch_size), one line a
method (or other swept setting), error bars the std over seeds; where the sweep has paired
differences between methods, a second panel draws each difference with its 95 % interval.
matplotlib, no pyplot state."""

from __future__ import annotations

import io
from numbers import Number
from pathlib import Path
from typing import Any

from dcl_core.experiments.sweep import SCORES
from dcl_core.files import write_bytes_atomic


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, Number) and not isinstance(v, bool) for v in values) and len(set(values)) > 1


def plot_accuracy(result: dict[str, Any], path: str | Path) -> None:
    """Draw `result` (from `dcl_core.experiments.sweep.sweep_result`) into the PNG file `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = result["summary"]
    found = {name for row in summary for name in row["mean"]}
    score = next((name for name in SCORES if name in found), next(iter(sorted(found)), None))
    fields = [f for f in result["swept"] if f != "seed"]
    x_field = next((f for f in fields if _numeric([row["params"].get(f) for row in summary])), None)
    line_fields = [f for f in fields if f != x_field]

    lines: dict[str, list[tuple[Any, float, float]]] = {}
    for row in summary:
        if score is None or score not in row["mean"]:
            continue
        values = [row["params"].get(f) for f in line_fields]
        label = (str(values[0]) if len(values) == 1 else ", ".join(f"{f}={v}" for f, v in zip(line_fields, values))) \
            if values else score
        x = row["params"].get(x_field) if x_field else label
        lines.setdefault(label, []).append((x, 100 * row["mean"][score], 100 * row["std"][score]))

    differences = [d for d in result.get("differences") or [] if score in d["mean"]]
    figure = Figure(figsize=(6, 7 if differences else 4), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(2, 1, 1) if differences else figure.add_subplot()
    for label, points in lines.items():
        points.sort(key=lambda p: p[0] if x_field else 0)
        xs, means, stds = zip(*points)
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
    xs_all = sorted({p[0] for points in lines.values() for p in points}) if x_field else []
    if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 4:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs_all, [str(x) for x in xs_all])
    ax.set_xlabel(x_field or "setting")
    ax.set_ylabel(f"{score or 'score'} (%)")
    seeds = max((row["n"] for row in summary), default=0)
    ax.set_title(f"{score or 'no scores'}: mean" + (f" ± std over {seeds} seeds" if seeds > 1 else ""))
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(title=", ".join(line_fields) or None)
    if differences:
        _draw_differences(figure.add_subplot(2, 1, 2), differences, score, x_field, xs_all)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    write_bytes_atomic(Path(path), buffer.getvalue())


def _draw_differences(ax, differences: list[dict], score: str, x_field: str | None, xs_all: list) -> None:
    """Mean paired difference (points) and its 95 % t-interval (bars) against the x field; a
    difference with under two pairs has no interval and is drawn hollow."""
    pairs: dict[str, list[tuple[Any, float, float | None, float | None]]] = {}
    for d in differences:
        others = {k: v for k, v in d["params"].items() if k != x_field}
        label = f"{d['a']} - {d['b']}" + "".join(f", {k}={v}" for k, v in others.items())
        x = d["params"].get(x_field) if x_field else ", ".join(f"{k}={v}" for k, v in d["params"].items()) or "all"
        ci = d["ci95"].get(score)
        mean = 100 * d["mean"][score]
        pairs.setdefault(label, []).append((x, mean, 100 * ci[0] if ci else None, 100 * ci[1] if ci else None))
    for label, points in pairs.items():
        points.sort(key=lambda p: p[0] if x_field else 0)
        xs = [p[0] for p in points]
        means = [p[1] for p in points]
        low = [p[1] - p[2] if p[2] is not None else 0.0 for p in points]
        high = [p[3] - p[1] if p[3] is not None else 0.0 for p in points]
        line = ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=4, label=label)
        hollow = [(x, m) for (x, m, lo, _) in points if lo is None]
        if hollow:
            ax.plot(*zip(*hollow), "o", markerfacecolor="white", color=line[0].get_color())
    ax.axhline(0.0, color="grey", linewidth=1)
    if x_field and xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 4:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs_all, [str(x) for x in xs_all])
    ax.set_xlabel(x_field or "setting")
    ax.set_ylabel(f"difference in {score} (points)")
    ax.set_title("paired difference over seeds, 95% t-interval")
    ax.grid(alpha=0.3)
    ax.legend()
