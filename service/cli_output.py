"""What the `dcl` client commands print: a job in one line, a sweep's summary, and aligned
tables (plain text, columns padded; numbers right-aligned). Standard library only, so that a
command starts quickly."""

from __future__ import annotations

import json


def table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """Columns padded to their widest cell, two spaces apart; the columns in `right` right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)] if header else []
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).rjust(w) if i in right else str(cell).ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def number(value) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def summary_line(summary: dict) -> str:
    """One row of a sweep's summary: "method=dcl batch_size=32  n=2  linear_top1 91.2 ± 0.4 %"
    (no ± for a single seed: there is no spread to show)."""
    params = " ".join(f"{k}={json.dumps(v)}" for k, v in summary["params"].items())
    def score(name, mean):
        spread = f" ± {100 * summary['std'][name]:.1f}" if summary["n"] > 1 else ""
        return f"{name} {100 * mean:.1f}{spread} %"
    scores = "  ".join(score(name, mean) for name, mean in summary["mean"].items())
    return f"{params}  n={summary['n']}  {scores or 'no scores'}"


def difference_line(diff: dict) -> str:
    """A sweep's paired difference: "dcl - simclr  batch_size=32  linear_top1 +1.2 points, 95% CI
    [-0.3, +2.7] (3 pairs)"."""
    params = " ".join(f"{k}={json.dumps(v)}" for k, v in diff["params"].items())
    scores = []
    for name, mean in diff["mean"].items():
        n, ci = diff["n"][name], diff["ci95"].get(name)
        interval = f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "n/a"
        scores.append(f"{name} {100 * mean:+.1f} points, 95% CI {interval} ({n} pair{'s' if n != 1 else ''})")
    return "  ".join(filter(None, [f"{diff['a']} - {diff['b']}", params, *scores])) + ("" if scores else "  no pairs")


def children_line(children: dict) -> str:
    """"jobs 3/8 done: 2 succeeded, 1 failed, 2 running, 3 queued" (a sweep's members)."""
    done = children["succeeded"] + children["failed"] + children["cancelled"]
    counts = ", ".join(f"{children[s]} {s}" for s in ("succeeded", "failed", "cancelled", "running", "queued")
                       if children[s])
    return f"jobs {done}/{children['total']} done" + (f": {counts}" if counts else "")


def describe(job: dict) -> str:
    """The job in one line (status, progress, loss...), then its error or result."""
    p = job["progress"]
    parts = [f"{job['id']}  {job['type']}  {job['status']}"]
    if p.get("total_steps"):
        parts.append(f"step {p['step']}/{p['total_steps']} ({100 * (p.get('fraction') or 0):.0f}%)")
    if p.get("epoch") is not None:
        parts.append(f"epoch {p['epoch']:.2f}")
    if p.get("eta_s") is not None and job["status"] == "running":
        parts.append(f"eta {int(p['eta_s'])}s")
    metrics = job.get("latest_metrics") or {}
    if metrics.get("loss") is not None:
        parts.append(f"loss {metrics['loss']:.4f}")
    if job.get("attempts", 0) > 1:
        parts.append(f"attempts {job['attempts']}")
    if job.get("children"):
        parts.append(children_line(job["children"]))
    if job.get("score") is not None:
        parts.append(f"score {100 * job['score']:.1f}%")
    if job.get("name"):
        parts.append(json.dumps(job["name"], ensure_ascii=False))
    if job.get("tags"):
        parts.append(f"[{', '.join(job['tags'])}]")
    line = "  ".join(parts)
    if job.get("notes"):
        line += "\nnotes: " + job["notes"].replace("\n", "\n       ")
    if job.get("error"):
        line += f"\nerror: {job['error']}"
    if job.get("result") and "summary" in job["result"]:
        line += "".join(f"\n  {summary_line(s)}" for s in job["result"]["summary"])
        line += "".join(f"\n  {difference_line(d)}" for d in job["result"].get("differences") or [])
    elif job.get("result"):
        line += "\nresult: " + json.dumps(job["result"])[:2000]
    return line


def progress_text(job: dict) -> str:
    p = job.get("progress") or {}
    kids = job.get("children")
    if kids:
        return f"{kids['succeeded'] + kids['failed'] + kids['cancelled']}/{kids['total']} jobs"
    if p.get("total_steps"):
        return f"{p['step']}/{p['total_steps']}"
    return ""


def score_text(job: dict) -> str:
    result = job.get("result") or {}
    scores = result.get("scores") or {}
    if isinstance(result.get("accuracy"), (int, float)):
        scores = {result.get("classifier", "accuracy"): result["accuracy"]}
    return " ".join(f"{k.replace('_top1', '')} {100 * v:.1f}%" for k, v in scores.items() if isinstance(v, (int, float)))


def jobs_table(jobs: list[dict]) -> str:
    rows = []
    for job in jobs:
        loss = (job.get("latest_metrics") or {}).get("loss")
        rows.append([job["id"], (job.get("name") or "")[:40], job["type"], job["status"], progress_text(job),
                     f"{loss:.4f}" if isinstance(loss, (int, float)) else "", score_text(job),
                     " ".join(job.get("tags") or [])[:40], job["created_at"][:19]])
    return table(["ID", "NAME", "TYPE", "STATUS", "PROGRESS", "LOSS", "SCORES", "TAGS", "CREATED"], rows, right={4, 5})

