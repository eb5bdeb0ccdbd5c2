"""Latency of GET /v1/jobs/{id}/neighbours on a 50,000-image index, over real HTTP (uvicorn),
against GET /v1/jobs/{id} on the same server in the same run as the reference.

    python benchmarks/neighbours_latency.py --items 50000 --dim 512 --requests 500

The embed job is recorded through the control plane (claim, succeed) with an index written by
the engine's own `write_index` from clustered random features, so no training is needed.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))


def timed(client: httpx.Client, path: str, params_list: list[dict]) -> list[float]:
    out = []
    for params in params_list:
        started = time.perf_counter()
        r = client.get(path, params=params)
        out.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()

    import torch

    from dcl_core.evaluation.index_build import write_index
    from service.control.plane import ControlPlane
    from service.control.settings import Settings

    with tempfile.TemporaryDirectory(prefix="dcl-bench-neighbours-") as work:
        data_dir = Path(work) / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "DCL_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
        api = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.api.app:create_app", "--factory",
                                "--port", str(port), "--log-level", "warning"], env=env, cwd=ROOT)
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
            for _ in range(300):
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            plane = ControlPlane(Settings(data_dir=data_dir))
            encoder = client.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()["id"]
            plane.lifecycle.claim(encoder, "bench")
            plane.lifecycle.succeed(encoder, "bench", {})
            job = client.post("/v1/jobs", json={"type": "embed", "encoder_job": encoder,
                                                "data": "builtin:digits"}).json()["id"]
            plane.lifecycle.claim(job, "bench")
            g = torch.Generator().manual_seed(0)
            centres = torch.randn(100, args.dim, generator=g)
            features = centres[torch.randint(0, 100, (args.items,), generator=g)] + torch.randn(args.items, args.dim, generator=g)
            run_dir = plane.storage.run_dir(job)
            run_dir.mkdir(parents=True, exist_ok=True)
            meta = write_index(run_dir, features)
            np.save(run_dir / "embeddings_labels.npy", np.zeros(args.items, np.int64))
            plane.lifecycle.succeed(job, "bench", {"index": meta, "image_size": 32}, plane.storage.job_files(job))

            rng = np.random.default_rng(0)
            items = rng.integers(0, args.items, args.requests).tolist()
            timed(client, f"/v1/jobs/{job}/neighbours", [{"item": i, "k": args.k} for i in items[:20]])  # warm
            neighbours = timed(client, f"/v1/jobs/{job}/neighbours", [{"item": i, "k": args.k} for i in items])
            status = timed(client, f"/v1/jobs/{job}", [{}] * args.requests)
        finally:
            api.terminate()
            api.wait(10)
    p50, p95 = percentile_ms(neighbours, 50), percentile_ms(neighbours, 95)
    r50, r95 = percentile_ms(status, 50), percentile_ms(status, 95)
    load = os.getloadavg()[0]
    print(f"| GET /v1/jobs/ID/neighbours (k={args.k}, {args.items:,} x {args.dim}, exact) | {p50:.1f} | {p95:.1f} | "
          f"{p95 / r95:.2f} |")
    print(f"| GET /v1/jobs/ID (reference, same server) | {r50:.1f} | {r95:.1f} | 1.00 |")
    print(f"{args.requests} requests each, one client, keep-alive; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
