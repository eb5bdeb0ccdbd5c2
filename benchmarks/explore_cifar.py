"""DCL and SimCLR side by side on the Explore page, on a CIFAR-10 subset, through the HTTP API:
the README's screenshot and the retrieval scores of both in benchmarks/RESULTS.md.

    python benchmarks/explore_cifar.py --data ../shared/data/cifar10-train-10k.zip --epochs 2

1. Splits the zip (`CLASS/NNNN.jpg`) by class: the last `--holdout` images of each class are
   held out (never trained on), the rest train.
2. Starts `dcl serve --embedded` on a free port (its data under `--work-dir`), uploads both,
   pretrains a DCL and a SimCLR encoder (same config otherwise) on the training images, and
   embeds the held-out images with each (index, retrieval scores, UMAP or PCA map).
3. Opens the Explore page of the DCL embedding side by side with the SimCLR one in Chromium,
   clicks a point, and saves the page as `docs/explore-cifar.png`; writes the scores into a
   marked section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from datetime import datetime
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START = "<!-- explore_cifar: start (written by benchmarks/explore_cifar.py) -->"
END = "<!-- explore_cifar: end -->"


def split(data: Path, holdout: int, out: Path) -> tuple[Path, Path]:
    """train.zip and heldout.zip: the last `holdout` images of each class folder held out."""
    with zipfile.ZipFile(data) as source:
        names = sorted(n for n in source.namelist() if n.lower().endswith((".jpg", ".png")))
        by_class: dict[str, list[str]] = {}
        for name in names:
            by_class.setdefault(name.split("/")[-2], []).append(name)
        train, held = out / "train.zip", out / "heldout.zip"
        with zipfile.ZipFile(train, "w") as t, zipfile.ZipFile(held, "w") as h:
            for members in by_class.values():
                for name in members[:-holdout]:
                    t.writestr(name, source.read(name))
                for name in members[-holdout:]:
                    h.writestr(name, source.read(name))
    return train, held


def wait(client: httpx.Client, job_id: str) -> dict:
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                sys.exit(f"job {job_id} {job['status']}: {job.get('error')}")
            return job
        time.sleep(5)


def screenshot(url: str, first: str, second: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/#/explore/{first}?with={second}")
        page.locator("canvas[data-map]").nth(1).wait_for(timeout=120_000)  # the page's CSP allows no eval
        candidates = json.loads(httpx.get(f"{url}/v1/jobs/{first}").text)["result"]["retrieval"]["mislabelled"]
        if candidates:  # a possibly mislabelled image: its neighbours in both embeddings
            page.locator(f'[data-mislabelled] [data-item="{candidates[0]["item"]}"]').click()
        else:
            page.locator("canvas[data-map]").first.click()
        page.locator(f'[data-neighbours="{second}"] .tile').first.wait_for(timeout=120_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out), full_page=True)
        browser.close()


def results_section(command: str, rows: list[tuple[str, dict]], seconds: float) -> str:
    lines = [START, "", "## Explore: DCL vs SimCLR retrieval on held-out CIFAR-10 images", "",
             f"`{command}` ({datetime.now():%Y-%m-%d}, {seconds / 60:.0f} min end to end). Both encoders are "
             "trained on the same training images with the same settings but the loss; each embeds the "
             "held-out images, and every held-out image is a query against the others (labels as relevance).",
             "The Explore page of both, side by side: `docs/explore-cifar.png` (in the README).", "",
             "| encoder | recall@1 | recall@5 | recall@10 | MAP@R | R-precision | top-10 purity | map |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, result in rows:
        s, r = result["scores"], result["retrieval"]
        lines.append(f"| {name} | {s['recall_at_1']:.3f} | {s['recall_at_5']:.3f} | {s['recall_at_10']:.3f} | "
                     f"{s['map_at_r']:.3f} | {r['r_precision']:.3f} | {r['purity_at_10']:.3f} | {result['map']['method']} |")
    lines += ["", END]
    return "\n".join(lines)


def write_results(section: str) -> None:
    path = HERE / "RESULTS.md"
    text = path.read_text(encoding="utf-8")
    if START in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/cifar10-train-10k.zip"))
    ap.add_argument("--holdout", type=int, default=200, help="held-out images per class")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--encoder", default="convnet_small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work-dir", default=str(HERE / ".explore_cifar"))
    args = ap.parse_args()
    started = time.time()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    train, held = split(Path(args.data), args.holdout, work)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DCL_DATA_DIR": str(work / "data"), "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "dcl_core.cli", "serve", "--embedded", "--port", str(port)],
                              env=env, cwd=ROOT, stdout=open(work / "serve.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        client = httpx.Client(base_url=url, timeout=600)
        for _ in range(600):
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(1)
        state_file = work / "state.json"  # a rerun reuses what is done (the data folder is kept)
        state = json.loads(state_file.read_text()) if state_file.exists() else {"sources": {}, "embeds": {}}
        started = state.setdefault("started", started)
        for name, path in (("train", train), ("heldout", held)):
            if name not in state["sources"]:
                with open(path, "rb") as f:
                    state["sources"][name] = client.post("/v1/datasets", files={"file": (path.name, f)}).json()["source"]
        sources, embeds = state["sources"], {}
        for method in ("dcl", "simclr"):
            if method in state["embeds"]:
                embeds[method] = wait(client, state["embeds"][method])
                continue
            config = {"method": method, "encoder": args.encoder, "batch_size": args.batch_size, "epochs": args.epochs,
                      "temperature": 0.2, "device": args.device, "optimizer": "adam", "lr": 0.003,
                      "dataset": {"source": sources["train"], "image_size": args.image_size}}
            encoder = client.post("/v1/jobs", json={"type": "pretrain", "config": config}).json()["id"]
            wait(client, encoder)
            job = client.post("/v1/jobs", json={"type": "embed", "encoder_job": encoder, "data": sources["heldout"],
                                                "device": args.device}).json()["id"]
            embeds[method] = wait(client, job)
            state["embeds"][method] = job
            state_file.write_text(json.dumps(state))
        (ROOT / "docs").mkdir(exist_ok=True)
        screenshot(url, embeds["dcl"]["id"], embeds["simclr"]["id"], ROOT / "docs" / "explore-cifar.png")
        command = "python benchmarks/explore_cifar.py " + " ".join(sys.argv[1:])
        rows = [("DCL", embeds["dcl"]["result"]), ("SimCLR", embeds["simclr"]["result"])]
        section = results_section(command.strip(), rows, time.time() - started)
        write_results(section)
        print(section)
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
