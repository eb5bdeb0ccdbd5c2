"""The Explore page in a real browser, against the real service and worker: the map draws its
points, hovering one shows its image, clicking one lists its neighbours, an uploaded image is
searched, and a second embed job of the same data shows side by side."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.dashboard.conftest import screenshot
from tests.fixtures.servers import run_api_server
from tests.fixtures.workers import start_worker
from tests.integration.helpers import image_zip, wait_job
from tests.fixtures.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RANDOM_ENCODER = {"encoder": "convnet_small", "batch_size": 16, "epochs": 1, "max_steps": 1, "lr": 1e-9,
                  "device": "cpu"}


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    """API + worker, an uploaded shapes dataset, and two embed jobs of it (two encoders)."""
    data_dir = tmp_path_factory.mktemp("explore-page") / "data"
    with run_api_server(data_dir) as api:
        worker = start_worker(data_dir)
        try:
            with api.client(timeout=60) as c:
                r = c.post("/v1/datasets", files={"file": ("shapes.zip", image_zip(num_per_class=40), "application/zip")})
                assert r.status_code == 201, r.text
                source = r.json()["source"]
                embeds = []
                for seed in (0, 1):
                    config = {**RANDOM_ENCODER, "seed": seed, "dataset": {"source": source, "image_size": 16}}
                    encoder = c.post("/v1/jobs", json={"type": "pretrain", "config": config}).json()["id"]
                    assert wait_job(c, encoder, timeout_s=600)["status"] == "succeeded"
                    job = c.post("/v1/jobs", json={"type": "embed", "encoder_job": encoder, "data": source,
                                                   "map": "pca", "device": "cpu"}).json()
                    assert wait_job(c, job["id"], timeout_s=600)["status"] == "succeeded"
                    embeds.append(job["id"])
            yield api, embeds
        finally:
            worker.stop()


def drawn_pixels(page, index: int = 0) -> list[list[int]]:
    """Where the index-th map has coloured (non-white) pixels, in CSS pixels of the page."""
    return page.evaluate("""(index) => {
        const c = document.querySelectorAll('canvas[data-map]')[index];
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const r = c.getBoundingClientRect(), out = [];
        for (let y = 0; y < c.height; y += 2) for (let x = 0; x < c.width; x += 2) {
          const i = 4 * (y * c.width + x);
          if (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240) out.push([r.left + x * r.width / c.width, r.top + y * r.height / c.height]);
        }
        return out;
    }""", index)


def test_explore_map_hover_click_search_and_side_by_side(explored, page, tmp_path):
    api, (first, second) = explored
    page.goto(f"{api.url}/#/job/{first}")
    page.locator("[data-explore]").click()
    page.locator("canvas[data-map]").wait_for()
    points = drawn_pixels(page)
    assert len(points) > 20  # 80 points, each a few pixels

    # Hover: the point's image (a thumbnail from the dataset's samples) in a card by the cursor.
    x, y = points[len(points) // 2]
    page.mouse.move(x, y)
    page.locator(".map-tip:not([hidden]) img").wait_for()

    # Click: its neighbours as tiles with scores and labels.
    page.mouse.click(x, y)
    tiles = page.locator(f'[data-neighbours="{first}"] .tile')
    wait_until(lambda: tiles.count() == 12)
    text = page.locator(f'[data-neighbours="{first}"]').inner_text()
    assert "Neighbours of #" in text and ("disc" in text or "bar" in text)
    assert tiles.locator("img").count() == 12

    # Side by side: pick the second embed job; two maps, and a click lists both jobs' neighbours.
    page.locator("[data-with]").select_option(second)
    wait_until(lambda: page.locator("canvas[data-map]").count() == 2)
    assert len(drawn_pixels(page, 1)) > 20
    x, y = drawn_pixels(page, 0)[5]
    page.mouse.click(x, y)
    for job_id in (first, second):
        wait_until(lambda: page.locator(f'[data-neighbours="{job_id}"] .tile').count() == 12)

    # Search by an uploaded image: both jobs answer with their nearest images.
    image = tmp_path / "query.png"
    with zipfile.ZipFile(io.BytesIO(image_zip(num_per_class=1))) as archive:
        image.write_bytes(archive.read("shapes/disc/000.png"))
    page.locator("[data-search]").set_input_files(str(image))
    for job_id in (first, second):
        wait_until(lambda: "Nearest to query.png" in page.locator(f'[data-neighbours="{job_id}"]').inner_text(), 120)
    screenshot(page, "explore")
