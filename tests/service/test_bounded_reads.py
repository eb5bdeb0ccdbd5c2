"""Memory bounded on the dataset read paths (issue 21, findings 1 and 2): samples of a highly
compressed .npz read only their rows, and the augment preview loads only the images it draws,
under an address-space limit. The hostile file (~640 MiB unpacked, ~20 MiB on disk, 31:1,
inside the upload limits) is built in the test."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcl_core.data.npz_rows import array_shape, read_rows
from service.api import previews
from tests.fixtures.hostile import compressible_npz, peak_rss_bytes
from tests.fixtures.servers import REPO_ROOT, dcl_env, run_api_server

MiB = 1 << 20


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return compressible_npz(tmp_path_factory.mktemp("hostile") / "hostile.npz")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_read_rows_reads_the_rows_asked_for(tmp_path, compression):
    x = np.arange(7 * 5 * 4 * 3, dtype=np.uint8).reshape(7, 5, 4, 3)
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w", compression) as archive:
        for key, array in {"x": x, "y": np.arange(7) * 10}.items():
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, array)
    with zipfile.ZipFile(path) as archive:
        indices, rows = read_rows(archive, "x", [6, 2, 2, 9, 0])
        assert indices == [0, 2, 6] and np.array_equal(rows, x[[0, 2, 6]])
        assert read_rows(archive, "y", [5, 1])[1].tolist() == [10, 50]
        _, thin = read_rows(archive, "x", [3], max_side=2)  # every 3rd line and column
        assert np.array_equal(thin[0], x[3, ::3, ::3])


@pytest.mark.slow
@pytest.mark.integration
def test_samples_of_a_hostile_npz_keep_the_api_small(tmp_path, hostile):
    with run_api_server(tmp_path / "data") as server, server.client(timeout=120) as c:
        with open(hostile, "rb") as f:
            r = c.post("/v1/datasets", files={"file": ("hostile.npz", f)})
        assert r.status_code == 201, r.text
        ds = r.json()["id"]
        with ThreadPoolExecutor(3) as pool:  # the dashboard opening it in three tabs
            answers = list(pool.map(lambda _: c.get(f"/v1/datasets/{ds}/samples", params={"n": 64}), range(3)))
        with zipfile.ZipFile(hostile) as archive:
            n = array_shape(archive, "x")[0]
        last = c.get(f"/v1/datasets/{ds}/samples", params={"items": f"5,{n - 1},{n}"})
        peak = peak_rss_bytes(server.process.pid)
    for r in answers:
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert len(items) == 64 and items[-1]["label"] == items[-1]["index"] % 10
        assert items[-1]["width"] == 48
    assert [i["index"] for i in last.json()["items"]] == [5, n - 1]  # n is past the end
    assert peak < 300 * MiB, f"the API peaked at {peak / MiB:.0f} MiB"


def _stored(tmp_path, npz) -> str:
    folder = tmp_path / "dataset"
    folder.mkdir()
    shutil.copy(npz, folder / "data.npz")
    return str(folder)


_PREVIEW = """
import json, resource, sys
from pathlib import Path
from service.api import previews
png = previews.augment_preview(Path(sys.argv[1]), {}, n=16, views=2, image_size=32, seed=0,
                               timeout_s=600, max_memory_bytes=int(sys.argv[2]))
Path(sys.argv[3]).write_bytes(png)
print(json.dumps({"peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


@pytest.mark.slow
def test_augment_preview_of_a_hostile_npz_loads_only_what_it_draws(tmp_path, hostile):
    pytest.importorskip("torch")
    out = tmp_path / "views.png"
    done = subprocess.run([sys.executable, "-c", _PREVIEW, _stored(tmp_path, hostile), str(6 << 30), str(out)],
                          capture_output=True, text=True, env=dcl_env(tmp_path), cwd=REPO_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    peak = json.loads(done.stdout.splitlines()[-1])["peak"]
    # torch alone is ~650 MiB resident; the whole x (640 MiB) on top was the bug
    assert peak < 1024 * MiB, f"the preview peaked at {peak / MiB:.0f} MiB"
    assert Image.open(io.BytesIO(out.read_bytes())).size == (3 * 34 + 2, 16 * 34 + 2)


@pytest.mark.slow
def test_a_preview_over_its_memory_limit_is_a_clear_error(tmp_path):
    pytest.importorskip("torch")
    np.savez(tmp_path / "small.npz", x=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(previews.PreviewTooLarge, match="DCL_PREVIEW_MAX_MEMORY_BYTES"):
        previews.augment_preview(Path(_stored(tmp_path, tmp_path / "small.npz")), {}, n=2, views=1, image_size=8, seed=0,
                                 timeout_s=300, max_memory_bytes=512 * MiB)
