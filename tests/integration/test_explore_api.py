"""An embed job's index over real HTTP, with a real worker, on the digits uploaded as PNG files:
neighbours equal to brute force on the downloaded index, a trained encoder's neighbours purer than
a randomly initialised one's, search with an uploaded image, hostile uploads, other keys."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.servers import REPO_ROOT, run_api_server
from tests.fixtures.workers import start_worker
from tests.integration.helpers import wait_job

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

ALICE, BOB = "alice-key-explore", "bob-key-explore"
IMAGE = 8
TRAINED = {"method": "dcl", "encoder": "convnet_small", "dataset": {"source": "", "image_size": IMAGE},
           "batch_size": 64, "epochs": 6, "optimizer": "adam", "lr": 0.003, "temperature": 0.2, "device": "cpu",
           "augment": {"crop_scale": [0.5, 1.0], "hflip_p": 0.0, "jitter_p": 0.0, "grayscale_p": 0.0}}
"""Augmentations that keep a digit a digit (no flips; crops that keep most of it)."""


def digits_png(index: int) -> bytes:
    from sklearn.datasets import load_digits

    pixels = np.rint(load_digits().images[index] * (255 / 16)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_zip(path: Path) -> tuple[Path, list[int]]:
    """The 1,797 digits as 8 px PNGs in class folders; returns the zip and, for each item in the
    dataset's order (class by class, then by name), its index in scikit-learn's array."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = []
    with zipfile.ZipFile(path, "w") as archive:
        for label in range(10):
            for index in np.flatnonzero(digits.target == label):
                archive.writestr(f"digits/{label}/{index:04d}.png", digits_png(int(index)))
                order.append(int(index))
    return path, order


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("explore") / "data"
    env = {"DCL_MAX_ACTIVE_JOBS_PER_KEY": "20"}
    with run_api_server(data_dir, keys=[ALICE, BOB], env=env) as api:
        worker = start_worker(data_dir, env={**env, "DCL_API_KEYS": f"{ALICE},{BOB}"})
        try:
            with api.client(ALICE, timeout=120) as alice:
                archive, order = digits_zip(data_dir.parent / "digits.zip")
                with open(archive, "rb") as f:
                    r = alice.post("/v1/datasets", files={"file": ("digits.zip", f, "application/zip")})
                assert r.status_code == 201, r.text
                source = f"dataset:{r.json()['id']}"
                trained = {**TRAINED, "dataset": {"source": source, "image_size": IMAGE}}
                random_init = {**trained, "epochs": 1, "max_steps": 1, "lr": 1e-9}
                encoders = [alice.post("/v1/jobs", json={"type": "pretrain", "config": c}).json()["id"]
                            for c in (trained, random_init)]
                embeds = {}
                for name, encoder in zip(("trained", "random"), encoders):
                    assert wait_job(alice, encoder, timeout_s=1800)["status"] == "succeeded"
                    r = alice.post("/v1/jobs", json={"type": "embed", "encoder_job": encoder, "data": source,
                                                     "map": "pca", "device": "cpu"})
                    assert r.status_code == 202, r.text
                    embeds[name] = r.json()["id"]
                for job_id in embeds.values():
                    job = wait_job(alice, job_id, timeout_s=600)
                    assert job["status"] == "succeeded", job
            yield {"api": api, "embeds": embeds, "encoders": encoders, "order": order, "source": source}
        finally:
            worker.stop()


def neighbour_shares(client, job_id: str, items: list[int], k: int = 10) -> np.ndarray:
    """For each item, the share of its k neighbours (over HTTP) that carry its label."""
    shares = []
    for item in items:
        r = client.get(f"/v1/jobs/{job_id}/neighbours", params={"item": item, "k": k})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["item"] == item and len(body["items"]) == k and item not in [n["item"] for n in body["items"]]
        shares.append(np.mean([n["label"] == body["label"] for n in body["items"]]))
    return np.asarray(shares)


def test_neighbours_equal_brute_force_on_the_downloaded_index(stack):
    job_id = stack["embeds"]["trained"]
    with stack["api"].client(ALICE) as alice:
        job = alice.get(f"/v1/jobs/{job_id}").json()
        result = job["result"]
        assert result["index"]["kind"] == "exact" and result["shape"] == [1797, result["index"]["dim"]]
        assert {"recall_at_1", "recall_at_5", "recall_at_10", "map_at_r"} <= set(result["scores"])
        assert result["map"]["method"] == "pca" and result["map"]["points"] == 1797
        features = np.load(io.BytesIO(alice.get(f"/v1/jobs/{job_id}/artifacts/index.npy").content))
        labels = np.load(io.BytesIO(alice.get(f"/v1/jobs/{job_id}/artifacts/embeddings_labels.npy").content))
        for item in (0, 901, 1796):
            body = alice.get(f"/v1/jobs/{job_id}/neighbours", params={"item": item, "k": 15}).json()
            scores = features @ features[item]
            scores[item] = -np.inf
            expected = np.lexsort((np.arange(len(scores)), -scores))[:15]
            assert [n["item"] for n in body["items"]] == expected.tolist()
            np.testing.assert_allclose([n["score"] for n in body["items"]], scores[expected], atol=1e-5)
            assert body["label"] == labels[item] and [n["label"] for n in body["items"]] == labels[expected].tolist()
        names = {a["name"] for a in alice.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]}
        assert {"map.npy", "map_items.npy", "map_labels.npy", "tensorboard/projector_config.pbtxt",
                "tensorboard/tensors.tsv", "tensorboard/metadata.tsv", "tensorboard/sprite.png"} <= names


def test_a_trained_encoder_has_purer_neighbours_than_a_random_one(stack):
    items = list(range(1797))
    with stack["api"].client(ALICE) as alice:
        trained = neighbour_shares(alice, stack["embeds"]["trained"], items)
        random_init = neighbour_shares(alice, stack["embeds"]["random"], items)
        results = {n: alice.get(f"/v1/jobs/{j}").json()["result"] for n, j in stack["embeds"].items()}
    gap = trained - random_init  # paired, item by item
    standard_error = gap.std(ddof=1) / np.sqrt(len(gap))
    print(f"top-10 purity over HTTP: trained {trained.mean():.3f}, random init {random_init.mean():.3f}, "
          f"gap {gap.mean():.3f} +- {standard_error:.4f}")
    # Random convnet features already group digits well (purity about 0.92); six epochs of DCL
    # measured a gap of 0.023 with a standard error of 0.004 (benchmarks/RESULTS.md). The gap must be
    # clear of the noise measured here, and the job's own scores must agree.
    assert gap.mean() > 3 * standard_error
    assert results["trained"]["retrieval"]["purity_at_10"] > results["random"]["retrieval"]["purity_at_10"]
    assert results["trained"]["scores"]["map_at_r"] > results["random"]["scores"]["map_at_r"]


def test_search_with_an_image_of_an_item_finds_that_item_first(stack):
    item = 1234
    png = digits_png(stack["order"][item])
    with stack["api"].client(ALICE, timeout=120) as alice:
        r = alice.post(f"/v1/jobs/{stack['embeds']['trained']}/search", params={"k": 5},
                       files={"file": ("query.png", png, "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == {"width": 8, "height": 8}
        assert body["items"][0]["item"] == item and body["items"][0]["score"] > 0.999
        samples = alice.get(f"/v1/datasets/{stack['source'][8:]}/samples", params={"items": f"{item},5,99999"}).json()
        assert [s["index"] for s in samples["items"]] == [5, item]  # past the end: left out
    done = subprocess.run([sys.executable, "-m", "dcl_core.cli", "neighbours", "--url", stack["api"].url, "--key", ALICE,
                           stack["embeds"]["trained"], str(item), "--k", "3"], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=stack["api"].env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(f"item {item}, label") and len(done.stdout.splitlines()) == 5


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny (truncated) image stream."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")


def a_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.png", digits_png(0))
    return buffer.getvalue()


def api_peak_rss_kib(api) -> int:
    status = Path(f"/proc/{api.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])


def test_hostile_uploads_are_refused_with_the_api_memory_bounded(stack):
    job_id = stack["embeds"]["trained"]
    before = api_peak_rss_kib(stack["api"])
    bomb = io.BytesIO()
    Image.new("L", (9000, 9000)).save(bomb, format="PNG")  # 81 Mpx in about 80 KB
    cases = {
        "text": (b"not an image at all", 422, "not an image"),
        "zip": (a_zip(), 422, "not an image"),
        "bomb": (bomb.getvalue(), 422, "pixels"),
        "huge header": (png_header(200_000, 200_000), 422, "pixels"),
        "truncated": (png_header(64, 64), 422, "cannot be decoded"),
        "too big": (b"\x00" * (17 * 1024 * 1024), 413, "larger than"),
    }
    with stack["api"].client(ALICE, timeout=120) as alice:
        for name, (data, status, words) in cases.items():
            r = alice.post(f"/v1/jobs/{job_id}/search", files={"file": ("x.png", data, "image/png")})
            assert r.status_code == status, (name, r.text)
            assert words in r.json()["detail"], (name, r.json())
        r = alice.post(f"/v1/jobs/{job_id}/search", content=b"", headers={"content-type": "multipart/form-data"})
        assert 400 <= r.status_code < 500
    grown_mib = (api_peak_rss_kib(stack["api"]) - before) / 1024
    assert grown_mib < 200, f"the API's peak memory grew by {grown_mib:.0f} MiB"


def test_wrong_keys_jobs_and_items_are_refused(stack):
    job_id = stack["embeds"]["trained"]
    with stack["api"].client(BOB) as bob:
        assert bob.get(f"/v1/jobs/{job_id}/neighbours", params={"item": 0}).status_code == 404
        r = bob.post(f"/v1/jobs/{job_id}/search", files={"file": ("q.png", digits_png(0), "image/png")})
        assert r.status_code == 404
    with stack["api"].client(ALICE) as alice:
        r = alice.get(f"/v1/jobs/{job_id}/neighbours", params={"item": 1797})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.item" and "1796" in r.json()["detail"]
        r = alice.get(f"/v1/jobs/{stack['encoders'][0]}/neighbours", params={"item": 0})
        assert r.status_code == 409 and "embed job" in r.json()["detail"]
        assert alice.get(f"/v1/jobs/{job_id}/neighbours", params={"item": 0, "k": 1001}).status_code == 422
