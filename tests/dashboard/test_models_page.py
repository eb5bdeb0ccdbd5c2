"""The Models page in a real browser against the real API: the registry's models, one model's
versions with their job, scores and sha256, an alias moved and deleted from the page, and a job
registered from the page. Jobs are finished through the control plane (no worker needed)."""

from __future__ import annotations

import os

import pytest

from service.control.plane import ControlPlane
from service.control.settings import Settings
from tests.dashboard.conftest import screenshot
from tests.fixtures.servers import run_api_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("models-page") / "data"
    with run_api_server(data_dir) as api:
        plane = ControlPlane(Settings(data_dir=data_dir))
        yield api, plane
        plane.close()


def trained(stack, score: float) -> str:
    api, plane = stack
    with api.client() as c:
        job_id = c.post("/v1/jobs", json={"type": "pretrain", "config": {"epochs": 1}}).json()["id"]
    plane.lifecycle.claim(job_id, "w1")
    files = [plane.storage.write_file(job_id, "encoder.safetensors", os.urandom(4096)),
             plane.storage.write_file(job_id, "encoder.json", b"{}")]
    plane.lifecycle.succeed(job_id, "w1", {"scores": {"linear_top1": score, "knn_top1": score - 0.03}}, files)
    return job_id


def test_models_page_shows_versions_moves_an_alias_and_registers_a_job(stack, page):
    api, _ = stack
    jobs = [trained(stack, s) for s in (0.842, 0.871, 0.905)]
    with api.client() as c:
        for job_id in jobs[:2]:
            assert c.post("/v1/models", json={"name": "cifar-r18", "job": job_id}).status_code == 201
        c.post("/v1/models", json={"name": "digits-dcl", "job": jobs[0]})
        c.put("/v1/models/cifar-r18/aliases/production", json={"version": 1})
        c.put("/v1/models/cifar-r18/aliases/staging", json={"version": 2})

    page.goto(api.url + "/#/models")
    row = page.locator('tr[data-model="cifar-r18"]')
    row.wait_for()
    assert "v2" in row.inner_text() and "production → v1" in row.inner_text()
    assert page.locator('tr[data-model="digits-dcl"]').count() == 1
    row.get_by_role("link", name="cifar-r18").click()
    versions = page.locator("table.versions tr[data-version]")
    versions.first.wait_for()
    assert versions.count() == 2 and "linear 87.1%" in versions.first.inner_text()
    assert "production" in page.locator('tr[data-version="1"]').inner_text()

    page.get_by_label("alias", exact=True).fill("production")
    page.get_by_label("version", exact=True).select_option(label="v2")
    page.get_by_role("button", name="Point alias").click()
    page.locator('[data-aliases] [data-alias="production"]', has_text="v2").wait_for()
    with api.client() as c:
        assert c.get("/v1/models/cifar-r18").json()["aliases"] == {"production": 2, "staging": 2}

    page.get_by_label("job to register").select_option(value=jobs[2])
    page.get_by_role("button", name="Register").click()
    page.locator('table.versions tr[data-version="3"]').wait_for()
    screenshot(page, "models")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="delete alias staging").click()
    page.locator('[data-aliases] [data-alias="staging"]').wait_for(state="detached")
    with api.client() as c:
        model = c.get("/v1/models/cifar-r18").json()
    assert model["aliases"] == {"production": 2} and model["latest_version"] == 3
