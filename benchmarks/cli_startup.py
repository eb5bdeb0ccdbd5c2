"""How long a `dcl` command that does not train takes to start: the median wall time of each
command, run N times against an API that answers at once (nothing listens: the command fails
fast after its imports and one refused connection), next to a bare `python -c pass` measured in
the same run, and optionally the same commands from another checkout (`--reference DIR`,
e.g. the main branch) for a ratio.

    python benchmarks/cli_startup.py [--runs 15] [--reference /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [["--version"], ["jobs"], ["status", "job_x"], ["metrics", "job_x"], ["artifacts", "job_x"], ["train", "--help"]]


def median_seconds(argv: list[str], root: Path | None, runs: int) -> float:
    env = {**os.environ, "DCL_URL": "http://127.0.0.1:9"}  # port 9: refused at once
    if root is not None:
        env["PYTHONPATH"] = str(root)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=root or REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--reference", type=Path, default=None, help="another checkout to compare with")
    args = parser.parse_args()
    bare = median_seconds([sys.executable, "-c", "pass"], None, args.runs)
    print(f"python -c pass: {bare:.3f} s (median of {args.runs}); load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':<22} {'this tree s':>12}" + (f" {'reference s':>12} {'ratio':>6}" if args.reference else ""))
    for command in COMMANDS:
        argv = [sys.executable, "-m", "dcl_core.cli", *command]
        ours = median_seconds(argv, REPO, args.runs)
        line = f"dcl {' '.join(command):<18} {ours:12.3f}"
        if args.reference:
            theirs = median_seconds(argv, args.reference, args.runs)
            line += f" {theirs:12.3f} {ours / theirs:6.2f}"
        print(line)


if __name__ == "__main__":
    main()
