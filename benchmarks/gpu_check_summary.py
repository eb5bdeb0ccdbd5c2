"""The results of benchmarks/gpu_check.sh from its step logs: summary.json and summary.md in OUT.

    python benchmarks/gpu_check_summary.py LOGS_DIR OUT_DIR [--dry 1]

Every figure is read from what a step printed or wrote; a step that failed or was skipped leaves
its figures out (null) and says so under "steps".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

GOALS = {"ratio_b256": 0.95, "ratio_b32": 0.8, "views_per_s_b256_h200": 85_000}


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def throughput(log: str) -> dict | None:
    rows = dict(re.findall(r"^\| (model-only|ours \(end to end\)) \| ([\d,.]+) \|", log, re.M))
    if len(rows) < 2:
        return None
    model, ours = _number(rows["model-only"]), _number(rows["ours (end to end)"])
    return {"model_only_views_per_s": model, "end_to_end_views_per_s": ours, "ratio": round(ours / model, 3)}


def last_json(log: str) -> dict | None:
    """The JSON object `dcl train` prints when it ends."""
    start = log.find("\n{")
    start = 0 if log.startswith("{") else start + 1 if start >= 0 else -1
    if start < 0:
        return None
    try:
        return json.JSONDecoder().raw_decode(log[start:])[0]
    except ValueError:
        return None


def train(logs: Path, name: str) -> dict | None:
    printed = last_json(_text(logs / f"{name}.log"))
    if printed is None:
        return None
    rows = [json.loads(line) for line in _text(logs / f"{name}.metrics.jsonl").splitlines() if line.strip()]
    epochs = [{key: row.get(key) for key in ("epoch", "epoch_time_s", "train_s", "knn_s", "checkpoint_s", "views_per_s")}
              for row in rows if "epoch_time_s" in row]
    return {"compile_s": printed.get("compile_s"), "seconds": printed.get("seconds"), "epochs": epochs}


def jobs(log: str) -> dict[str, float]:
    return {n: _number(v) for n, v in re.findall(r"^\s+(\d+) job\(s\): ([\d,.]+) views/s", log, re.M)}


def probe(logs: Path, name: str) -> dict | None:
    rc = _text(logs / f"{name}.rc").split()
    result = _text(logs / f"{name}.json")
    if len(rc) != 2 or rc[0] != "0" or not result:
        return None
    data = json.loads(result)
    return {"wall_s": int(rc[1]), "accuracy": data.get("accuracy"), "seconds_in_probe": data.get("seconds")}


def summarize(logs: Path, dry: bool) -> dict:
    steps = {}
    for rc in sorted(logs.glob("*.rc")):
        parts = _text(rc).split()
        steps[rc.stem] = {"rc": parts[0], "seconds": int(parts[1]) if len(parts) > 1 else None}
    tp = {p.stem.split("_b")[1]: throughput(_text(p)) for p in sorted(logs.glob("throughput_b*.log"))}
    return {
        "dry": dry,
        "machine": _text(logs / "machine.txt").strip(),
        "data": _text(logs / "data.txt").strip(),
        "steps": steps,
        "throughput": tp,
        "train_cold": train(logs, "train_cold"),
        "train_warm": train(logs, "train_warm"),
        "jobs_per_gpu_b32": jobs(_text(logs / "jobs_per_gpu.log")),
        "probe_cold": probe(logs, "probe_cold"),
        "probe_cached": probe(logs, "probe_cached"),
        "goals": GOALS,
    }


def markdown(s: dict) -> str:
    lines = [f"# gpu_check {'(DRY: CPU, tiny sizes; no GPU figure)' if s['dry'] else ''}", "",
             f"machine: {s['machine']!r}", f"data: {s['data']}", "",
             "| batch | model-only views/s | end to end views/s | ratio |", "|---|---:|---:|---:|"]
    for batch, row in s["throughput"].items():
        if row:
            lines.append(f"| {batch} | {row['model_only_views_per_s']:,.0f} | {row['end_to_end_views_per_s']:,.0f} "
                         f"| {row['ratio']:.2f} |")
        else:
            lines.append(f"| {batch} | failed | failed | |")
    cold, warm = s["train_cold"], s["train_warm"]
    lines += ["", f"compile_s cold: {cold and cold['compile_s']}, warm: {warm and warm['compile_s']}", "",
              "| epoch | epoch_time_s (end to end) | train_s | knn_s | checkpoint_s | views/s (last window) |",
              "|---|---:|---:|---:|---:|---:|"]
    for e in (cold or {}).get("epochs", []):
        lines.append(f"| {e['epoch']:g} | {e['epoch_time_s']:.3f} | {e['train_s']:.3f} | {e['knn_s']:.3f} "
                     f"| {e['checkpoint_s']:.3f} | {e['views_per_s']:,.0f} |")
    lines += ["", "| jobs at once (batch 32) | aggregate views/s |", "|---|---:|"]
    lines += [f"| {n} | {v:,.0f} |" for n, v in s["jobs_per_gpu_b32"].items()]
    for kind in ("cold", "cached"):
        p = s[f"probe_{kind}"]
        lines.append(f"\nprobe {kind}: " + (f"{p['wall_s']} s wall end to end, accuracy {p['accuracy']:.3f}" if p else "failed"))
    lines += ["", "| step | rc | s |", "|---|---|---:|"]
    lines += [f"| {name} | {st['rc']} | {st['seconds']} |" for name, st in s["steps"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--dry", default="0")
    args = p.parse_args(argv)
    summary = summarize(args.logs, args.dry == "1")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
