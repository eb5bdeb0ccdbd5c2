"""A dataset's sample thumbnails and its augmented views (`dcl show-augment` run by the API
in a subprocess, or a 503 where torch is not installed)."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.servers import REPO_ROOT, dcl_env, run_api_server
from tests.integration.helpers import image_zip as noisy_zip
from tests.service.conftest import image_zip


def upload(client, path, name):
    with open(path, "rb") as f:
        r = client.post("/v1/datasets", files={"file": (name, f)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def decode(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def test_samples_of_an_image_folder_cover_every_class(alice, bob, tmp_path):
    ds = upload(alice, image_zip(tmp_path / "pets.zip", per_class=5), "pets.zip")
    r = alice.get(f"/v1/datasets/{ds}/samples", params={"n": 4})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["class"] for i in items] == ["cat", "cat", "dog", "dog"]
    assert [i["index"] for i in items] == [0, 2, 5, 7]
    image = decode(items[0]["src"])
    assert image.size == (96, 96) and items[0]["width"] == 16  # 16 px scaled up, crisp
    assert image.convert("RGB").getpixel((50, 50)) == (200, 30, 30)
    assert alice.get(f"/v1/datasets/{ds}/samples", params={"n": 1000}).status_code == 422
    assert bob.get(f"/v1/datasets/{ds}/samples").status_code == 404


def test_samples_of_an_npz_read_only_what_they_show(alice, tmp_path):
    x = np.zeros((10, 8, 8, 3), np.uint8)
    x[:, :, :, 0] = np.arange(10)[:, None, None] * 20
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x, y=np.arange(10) % 2, classes=np.array(["even", "odd"]))
    ds = upload(alice, path, "tiny.npz")
    items = alice.get(f"/v1/datasets/{ds}/samples", params={"n": 3}).json()["items"]
    assert [(i["index"], i["class"]) for i in items] == [(0, "even"), (3, "odd"), (6, "even")]
    assert decode(items[1]["src"]).convert("RGB").getpixel((0, 0)) == (60, 0, 0)


@pytest.mark.slow
def test_augment_preview_draws_the_views_of_a_config(alice, tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "shapes.zip").write_bytes(noisy_zip(num_per_class=3))
    ds = upload(alice, tmp_path / "shapes.zip", "shapes.zip")
    body = {"augment": {"crop_scale": [0.5, 1.0], "jitter_p": 0.0}, "n": 3, "views": 2, "image_size": 16}
    r = alice.post(f"/v1/datasets/{ds}/augment-preview", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    assert image.size == ((2 + 1) * (16 + 2) + 2, 3 * (16 + 2) + 2)  # rows: the image, then 2 views
    bad = alice.post(f"/v1/datasets/{ds}/augment-preview", json={"augment": {"crop_scale": [0.9, 0.1]}})
    assert bad.status_code == 422 and "crop_scale" in bad.json()["detail"]


@pytest.mark.integration
def test_augment_preview_without_torch_is_a_clear_503(tmp_path):
    shim = tmp_path / "no_torch"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    pythonpath = f"{shim}:{REPO_ROOT}"
    check = subprocess.run([sys.executable, "-c", "import torch"], env=dcl_env(tmp_path, PYTHONPATH=pythonpath))
    assert check.returncode != 0
    with run_api_server(tmp_path / "data", env={"PYTHONPATH": pythonpath}) as server, server.client() as c:
        ds = upload(c, image_zip(tmp_path / "pets.zip"), "pets.zip")
        assert c.get(f"/v1/datasets/{ds}/samples").status_code == 200  # Pillow only: works
        r = c.post(f"/v1/datasets/{ds}/augment-preview", json={})
        assert r.status_code == 503
        assert "torch" in r.json()["detail"] and "dcl show-augment" in r.json()["detail"]
