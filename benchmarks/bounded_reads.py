"""Peak memory of the dataset read paths on a hostile .npz (issue 21, findings 1 and 2).

    PYTHONPATH=. python benchmarks/bounded_reads.py [--mib 640]

Builds an .npz of about `--mib` MiB of images that deflates ~31:1 (inside the upload limits),
starts the API (uvicorn, a temporary data folder), uploads it, and prints the API's peak
resident memory (VmHWM) after start (the reference), after the upload, and after 3 parallel
`GET .../samples?n=64`; then the peak of the augment preview's subprocess (16 images, 8 views)
against a subprocess that only imports torch (the reference).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.fixtures.hostile import MiB, compressible_npz, peak_rss_bytes
from tests.fixtures.servers import REPO_ROOT, run_api_server

_CHILD_PEAK = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); " \
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)"


def child_peak(cmd: list[str]) -> int:
    done = subprocess.run([sys.executable, "-c", _CHILD_PEAK, *cmd], capture_output=True, text=True,
                          cwd=REPO_ROOT, check=True)
    return int(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=640)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dcl-bench-") as work:
        work = Path(work)
        npz = compressible_npz(work / "hostile.npz", args.mib * MiB)
        print(f"hostile.npz: {npz.stat().st_size / MiB:.1f} MiB on disk, {args.mib} MiB of images")
        with run_api_server(work / "data") as server, server.client(timeout=300) as c:
            pid = server.process.pid
            start = peak_rss_bytes(pid)
            with open(npz, "rb") as f:
                ds = c.post("/v1/datasets", files={"file": ("hostile.npz", f)}).json()["id"]
            uploaded = peak_rss_bytes(pid)
            with ThreadPoolExecutor(3) as pool:
                codes = list(pool.map(lambda _: c.get(f"/v1/datasets/{ds}/samples", params={"n": 64}).status_code,
                                      range(3)))
            samples = peak_rss_bytes(pid)
        print(f"API peak after start (reference): {start / MiB:.0f} MiB")
        print(f"  after the upload: {uploaded / MiB:.0f} MiB (x{uploaded / start:.2f})")
        print(f"  after 3 parallel samples {codes}: {samples / MiB:.0f} MiB (x{samples / start:.2f})")
        folder = work / "dataset"
        folder.mkdir()
        shutil.move(npz, folder / "data.npz")
        torch_only = child_peak([sys.executable, "-c", "import torch"])
        preview = child_peak([sys.executable, "-m", "service.api.bounded", str(6 << 30), "show-augment",
                              str(folder / "data.npz"), "--out", str(work / "v.png"), "--n", "16", "--views", "8",
                              "--image-size", "32", "--cache-dir", str(work)])
        print(f"a process importing torch (reference): {torch_only / MiB:.0f} MiB")
        print(f"  the augment preview, 16 images x 8 views: {preview / MiB:.0f} MiB (x{preview / torch_only:.2f})")


if __name__ == "__main__":
    main()
