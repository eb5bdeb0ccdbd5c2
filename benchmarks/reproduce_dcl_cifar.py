"""DCL vs SimCLR on CIFAR-10 at batch 32/64/128/256, as ONE sweep job through the HTTP API of
a running service, written into benchmarks/RESULTS.md (issue 8).

    python benchmarks/reproduce_dcl_cifar.py --url http://127.0.0.1:8000 --key KEY
    python benchmarks/reproduce_dcl_cifar.py --data ../shared/data/cifar10-train-10k.zip \\
        --holdout 2000 --encoder convnet_small --device cpu --epochs 5

1. Splits the image zip (`CLASS/NNNN.jpg`) into a training zip and a held-out zip of
   `--holdout` images, stratified by class folder with a fixed seed: the held-out images are
   never trained on; they are the test split of every member's evaluation.
2. Uploads both (POST /v1/datasets) and submits one sweep job: DCL and SimCLR at batch
   32/64/128/256, ResNet-18 with the small stem, temperature 0.1, each member scored with a
   linear probe and kNN (trained on the training zip, tested on the held-out one).
3. Follows the sweep, then writes its table, its `accuracy.png` (into benchmarks/), the
   device and the wall time into a marked section of benchmarks/RESULTS.md, which a later run
   replaces.

Resume: what was done is kept in `--work-dir`/state.json (dataset ids, sweep id). Run the same
command again after a cut (Ctrl-C, a lost connection, GPU time given in pieces) and it
re-attaches to the same sweep instead of starting anew; `--fresh` starts over.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
import zipfile
from datetime import datetime
from pathlib import Path, PurePosixPath

HERE = Path(__file__).resolve().parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
TERMINAL = ("succeeded", "failed", "cancelled")
SECTION_START = "<!-- reproduce_dcl_cifar: start (written by benchmarks/reproduce_dcl_cifar.py) -->"
SECTION_END = "<!-- reproduce_dcl_cifar: end -->"
PLOT_NAME = "dcl_cifar_accuracy.png"
GRID = {"method": ["dcl", "simclr"], "batch_size": [32, 64, 128, 256]}


# ---- the held-out split ---------------------------------------------------------------------

def images_by_class(names: list[str]) -> dict[str, list[str]]:
    """Image members of a zip grouped by their folder (`.../CLASS/NNNN.jpg`), each sorted."""
    classes: dict[str, list[str]] = {}
    for name in names:
        path = PurePosixPath(name)
        if name.endswith("/") or path.suffix.lower() not in IMAGE_SUFFIXES or len(path.parts) < 2:
            continue
        if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
            continue
        classes.setdefault(path.parent.as_posix(), []).append(name)
    return {label: sorted(members) for label, members in sorted(classes.items())}


def holdout_quotas(sizes: dict[str, int], holdout: int) -> dict[str, int]:
    """How many images of each class to hold out: proportional to the class's size, the
    rounding remainders given to the largest fractions (ties by class name), so they sum to
    `holdout` exactly."""
    total = sum(sizes.values())
    if not 0 < holdout < total:
        raise ValueError(f"--holdout must be between 1 and {total - 1} (the zip has {total} images)")
    exact = {label: holdout * size / total for label, size in sizes.items()}
    quotas = {label: int(share) for label, share in exact.items()}
    left = holdout - sum(quotas.values())
    for label in sorted(exact, key=lambda c: (-(exact[c] - quotas[c]), c))[:left]:
        quotas[label] += 1
    return quotas


def stratified_split(names: list[str], holdout: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, held_out) member names: `holdout` images, the same share of every class, drawn
    with `seed`; the same input always gives the same split."""
    classes = images_by_class(names)
    if not classes:
        raise ValueError("the zip holds no images in class folders (expected CLASS/NNNN.jpg)")
    quotas = holdout_quotas({label: len(members) for label, members in classes.items()}, holdout)
    rng = random.Random(seed)
    train: list[str] = []
    held: list[str] = []
    for label, members in classes.items():
        shuffled = list(members)
        rng.shuffle(shuffled)
        held += sorted(shuffled[: quotas[label]])
        train += sorted(shuffled[quotas[label]:])
    return train, held


def write_split(source: Path, out_dir: Path, holdout: int, seed: int) -> tuple[Path, Path]:
    """The training zip and the held-out zip, next to each other in `out_dir` (members copied
    as they are: the JPEGs are compressed already)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / f"train-{seed}-{holdout}.zip", out_dir / f"holdout-{seed}-{holdout}.zip"
    with zipfile.ZipFile(source) as archive:
        parts = stratified_split(archive.namelist(), holdout, seed)
        for path, members in zip(paths, parts):
            partial = path.with_name(path.name + ".part")
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as out:
                for name in members:
                    out.writestr(name, archive.read(name))
            os.replace(partial, path)
    return paths


# ---- the request and the table --------------------------------------------------------------

def sweep_request(train_id: str, holdout_id: str, *, epochs: int, encoder: str, device: str,
                  temperature: float = 0.1) -> dict:
    base = {
        "encoder": encoder,
        "small_stem": True,
        "temperature": temperature,
        "epochs": epochs,
        "device": device,
        "dataset": {"source": f"dataset:{train_id}"},
    }
    return {"type": "sweep", "config": base, "grid": GRID,
            "evaluate": {"train": f"dataset:{train_id}", "test": f"dataset:{holdout_id}", "classifier": "both"}}


def percent(value) -> str:
    """A score as a percentage (the service reports fractions 0..1)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{value * 100:.1f}" if value <= 1.0 else f"{value:.1f}"


def cell(value) -> str:
    if isinstance(value, float):
        return percent(value) if 0.0 <= value <= 1.0 else f"{value:g}"
    return "-" if value is None else str(value).replace("|", "\\|")


def results_table(result: dict) -> str:
    """Markdown: one row per grid point (its swept values, both scores, its status), then the
    summary rows (mean and std over seeds) if the sweep gave any."""
    swept = list(result.get("swept") or [])
    rows = result.get("rows") or []
    if not swept:
        swept = sorted({key for row in rows for key in (row.get("params") or {})})
    lines = ["| " + " | ".join([*swept, "linear top-1 %", "kNN top-1 %", "status"]) + " |",
             "|" + "---|" * len(swept) + "---:|---:|---|"]
    for row in rows:
        params, scores = row.get("params") or {}, row.get("scores") or {}
        status = row.get("status") or "-"
        if row.get("error"):
            status += f": {str(row['error'])[:120]}"
        values = [cell(params.get(name)) for name in swept]
        values += [percent(scores.get("linear_top1")), percent(scores.get("knn_top1")), cell(status)]
        lines.append("| " + " | ".join(values) + " |")
    summary = [item for item in (result.get("summary") or []) if isinstance(item, dict)]
    if any((item.get("n") or 0) > 1 for item in summary):  # one seed a point: the table above says it all
        params = list(dict.fromkeys(key for item in summary for key in (item.get("params") or {})))
        scores = list(dict.fromkeys(key for item in summary for key in (item.get("mean") or {})))
        lines += ["", "Mean ± std over seeds (top-1 %):", "",
                  "| " + " | ".join(params + ["n"] + scores) + " |", "|" + "---|" * (len(params) + 1 + len(scores))]
        for item in summary:
            mean, std = item.get("mean") or {}, item.get("std") or {}
            cells = [cell((item.get("params") or {}).get(p)) for p in params] + [cell(item.get("n"))]
            cells += [f"{100 * mean[k]:.1f} ± {100 * (std.get(k) or 0):.1f}" if mean.get(k) is not None else "-"
                      for k in scores]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wall_time_s(job: dict) -> float | None:
    """Seconds from the sweep's submission to its end, by the server's clock."""
    try:
        start = datetime.fromisoformat(job["created_at"])
        end = datetime.fromisoformat(job["finished_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def section(job: dict, *, args, state: dict, plot: str | None) -> str:
    wall = wall_time_s(job)
    wall_text = f"{wall / 60:.1f} min ({wall:.0f} s)" if wall is not None else "unknown"
    command = "python benchmarks/reproduce_dcl_cifar.py " + shlex.join(state["argv"])
    lines = [
        SECTION_START,
        f"## DCL vs SimCLR on CIFAR-10 held-out images ({args.encoder}, {args.epochs} epochs, {args.device_label})",
        "",
        f"    {command}",
        "",
        f"{datetime.now().date()}, device: **{args.device_label}**; sweep `{job['id']}` ({job['status']}); "
        f"wall time from submit to the last member's end: **{wall_text}**.",
        f"Data: `{Path(args.data).name}` split by class with seed {args.seed}: {state['train_images']} training "
        f"images, {state['holdout_images']} held out (never trained on; the test split of every score). "
        f"Encoder {args.encoder} (small stem at 32 px), temperature 0.1, linear probe and kNN on the encoder's features.",
        "",
        results_table(job.get("result") or {}),
        "",
    ]
    if plot:
        lines += [f"![linear top-1 against batch size]({plot})", ""]
    lines.append(SECTION_END)
    return "\n".join(lines)


def replace_section(text: str, new: str) -> str:
    """`text` with its marked section replaced by `new` (appended when there is none)."""
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start != -1 and end > start:
        return text[:start] + new + text[end + len(SECTION_END):]
    return text.rstrip("\n") + "\n\n" + new + "\n"


# ---- the run, resumable -------------------------------------------------------------------

def load_state(path: Path, fresh: bool) -> dict:
    if fresh or not path.exists():
        return {}
    return json.loads(path.read_text())


def save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(state, indent=2))
    os.replace(partial, path)


def same_run(state: dict, args) -> str | None:
    """Why a saved state belongs to another run (None when it is this one)."""
    for key in ("data", "holdout", "seed", "epochs", "encoder", "device", "url"):
        if key in state and state[key] != getattr(args, key):
            return f"the saved run has {key}={state[key]!r}, this one {getattr(args, key)!r}"
    return None


def child_counts(children) -> dict[str, int]:
    """Members by status, from the parent's `children` (counts, {"counts": ...}, or a list of jobs)."""
    if isinstance(children, dict):
        children = children.get("counts", children)
        return {str(k): v for k, v in children.items() if isinstance(v, int) and not isinstance(v, bool)}
    counts: dict[str, int] = {}
    for child in children if isinstance(children, list) else []:
        status = child.get("status") if isinstance(child, dict) else None
        if status:
            counts[status] = counts.get(status, 0) + 1
    return counts


def follow(client, sweep_id: str, poll_s: float) -> dict:
    """Poll the sweep until it ends, printing a progress line each time it changes."""
    last = None
    while True:
        job = client.job(sweep_id)
        progress = job.get("progress") or {}
        fraction = progress.get("fraction")
        counts = child_counts(job.get("children"))
        line = (f"{job['status']}: {fraction * 100:.1f}%" if fraction is not None else job["status"])
        if counts:
            line += " (" + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ")"
        if progress.get("eta_s"):
            line += f", about {progress['eta_s'] / 60:.0f} min left"
        if line != last:
            print(f"{datetime.now():%H:%M:%S} sweep {sweep_id} {line}", flush=True)
            last = line
        if job["status"] in TERMINAL:
            return job
        time.sleep(poll_s)


def run(args) -> int:
    from service.client import Client

    state_path = args.work_dir / "state.json"
    state = load_state(state_path, args.fresh)
    mismatch = same_run(state, args) if state else None
    if mismatch:
        print(f"error: {state_path}: {mismatch}; pass the same options to resume, or --fresh", file=sys.stderr)
        return 2
    state.update({key: getattr(args, key) for key in ("data", "holdout", "seed", "epochs", "encoder", "device", "url")})
    state["argv"] = state.get("argv") or args.argv
    with Client(args.url, args.key, timeout=120) as client:
        if "train_dataset" not in state or "holdout_dataset" not in state:
            print(f"splitting {args.data}: {args.holdout} held out (stratified, seed {args.seed})", flush=True)
            train_zip, holdout_zip = write_split(Path(args.data), args.work_dir, args.holdout, args.seed)
            with zipfile.ZipFile(train_zip) as a, zipfile.ZipFile(holdout_zip) as b:
                state["train_images"], state["holdout_images"] = len(a.namelist()), len(b.namelist())
            for key, path, name in (("train_dataset", train_zip, "cifar10-train-split"),
                                    ("holdout_dataset", holdout_zip, "cifar10-holdout-split")):
                if key not in state:
                    print(f"uploading {path.name} ...", flush=True)
                    state[key] = client.upload(path, name=name)["id"]
                    save_state(state_path, state)
        if "sweep_id" not in state:
            body = sweep_request(state["train_dataset"], state["holdout_dataset"], epochs=args.epochs,
                                 encoder=args.encoder, device=args.device)
            state["sweep_id"] = client.submit(body)["id"]
            save_state(state_path, state)
            print(f"submitted sweep {state['sweep_id']}", flush=True)
        else:
            print(f"re-attached to sweep {state['sweep_id']} ({state_path})", flush=True)
        save_state(state_path, state)
        job = follow(client, state["sweep_id"], args.poll)
        if job["status"] != "succeeded":
            print(f"the sweep ended {job['status']}: {job.get('error')}", file=sys.stderr)
            return 1
        plot = None
        artifacts = {a["name"]: a for a in client.artifacts(job["id"])}
        if "accuracy.png" in artifacts:
            downloaded = client.download(job["id"], artifacts["accuracy.png"], args.work_dir)
            os.replace(downloaded, HERE / PLOT_NAME)
            plot = PLOT_NAME
    results = args.results
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    results.write_text(replace_section(text, section(job, args=args, state=state, plot=plot)))
    print(results_table(job.get("result") or {}))
    print(f"written to {results}" + (f" and {HERE / PLOT_NAME}" if plot else ""))
    return 0


def shown_argv(argv: list[str]) -> list[str]:
    """The command line as RESULTS.md shows it: without --fresh, and never with the key."""
    shown: list[str] = []
    for arg in argv:
        if arg == "--fresh":
            continue
        if shown and shown[-1] == "--key":
            arg = "KEY"
        shown.append("--key=KEY" if arg.startswith("--key=") else arg)
    return shown


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("DCL_URL", "http://127.0.0.1:8000"))
    p.add_argument("--key", default=os.environ.get("DCL_API_KEY"), help="API key (or DCL_API_KEY)")
    p.add_argument("--data", default="../shared/data/cifar10-train.zip",
                   help="an image zip laid out CLASS/NNNN.jpg (default: ../shared/data/cifar10-train.zip, "
                        "from the repository root)")
    p.add_argument("--holdout", type=int, default=5000, help="images held out for evaluation (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out draw")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--device", default="auto", help="the members' config.device (auto, cuda, cpu)")
    p.add_argument("--device-label", default=None, help="what to call the machine in RESULTS.md, e.g. 'one H100'")
    p.add_argument("--poll", type=float, default=15.0, help="seconds between progress checks")
    p.add_argument("--work-dir", type=Path, default=HERE / ".reproduce_dcl_cifar",
                   help="where the split zips and the resume state live")
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--fresh", action="store_true", help="forget a saved run and start a new sweep")
    args = p.parse_args(argv)
    args.argv = shown_argv(argv)
    args.device_label = args.device_label or args.device
    from dcl_core.errors import UserError

    try:
        return run(args)
    except UserError as exc:  # the service's own message (a 4xx, or the service unreachable)
        print(f"error: {exc}; fix it and run the same command again (what is done is kept)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopped; run the same command again to re-attach to the sweep", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
