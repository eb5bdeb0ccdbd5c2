"""The dashboard in a real browser, against the real service and a real worker: submit a run
from the form and watch its curve grow, cancel one, compare two, upload a dataset, and the
key prompt with two keys."""

from __future__ import annotations

import time

import pytest

from tests.dashboard.conftest import screenshot
from tests.fixtures.servers import run_api_server
from tests.fixtures.workers import start_worker
from tests.integration.helpers import image_zip, wait_job
from tests.fixtures.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = {"encoder": "convnet_small", "dataset": {"source": "builtin:digits", "image_size": 8}, "batch_size": 32,
        "epochs": 1, "device": "cpu", "log_every_steps": 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """API + worker. Event streams end every second, so the job page reconnects mid-run."""
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    env = {"DCL_SSE_POLL_SECONDS": "0.2", "DCL_SSE_MAX_STREAM_SECONDS": "1"}
    with run_api_server(data_dir, env=env) as api:
        worker = start_worker(data_dir, env=env)
        try:
            yield api
        finally:
            worker.stop()


def submit(api, **config) -> str:
    with api.client() as c:
        r = c.post("/v1/jobs", json={"type": "pretrain", "config": {**TINY, **config}})
        assert r.status_code == 202, r.text
        return r.json()["id"]


def hash_of(page) -> str:
    # page.url misses hash changes made by `location.hash = ...`.
    return page.evaluate("() => location.hash")


def set_field(page, path: str, value: str) -> None:
    el = page.locator(f'[data-path="{path}"]')
    if el.evaluate("e => e.tagName") == "SELECT":
        el.select_option(label=value)
    else:
        el.fill(value)


def test_run_from_the_form_appears_and_its_loss_chart_gains_points(stack, page):
    page.goto(stack.url + "/#/new")
    set_field(page, "config.encoder", "convnet_small")
    set_field(page, "config.batch_size", "32")
    # Enough steps that the chart is seen part-way on a quiet machine (14 once ended first).
    set_field(page, "config.epochs", "3")
    set_field(page, "config.max_steps", "120")
    set_field(page, "config.device", "cpu")
    set_field(page, "config.dataset.image_size", "8")
    page.locator("summary", has_text="All other settings").click()
    set_field(page, "config.log_every_steps", "1")
    page.get_by_role("button", name="Start run").click()
    wait_until(lambda: hash_of(page).startswith("#/job/job_"))
    job_id = hash_of(page).rsplit("/", 1)[-1]

    charts = page.locator(".charts[data-points]").first
    seen = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        seen.add(int(charts.get_attribute("data-points") or 0))
        if page.locator(".page-head .badge").inner_text() in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    page.wait_for_timeout(500)
    assert page.locator(".page-head .badge").inner_text() == "succeeded"
    with stack.client() as c:
        rows = c.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 10000}).json()["items"]
    assert [r["step"] for r in rows] == list(range(1, 121))
    # It grew while it trained, across stream reconnects, to every row: no gap, no duplicate.
    assert len({n for n in seen if 0 < n < len(rows)}) >= 1, seen
    assert int(charts.get_attribute("data-points")) == len(rows)
    assert page.locator("[data-artifact='encoder.safetensors']").count() == 1
    screenshot(page, "job")

    page.goto(stack.url + "/#/jobs")
    row = page.locator(f"tr[data-job='{job_id}']")
    row.wait_for()
    assert row.locator(".badge").inner_text() == "succeeded"
    assert "convnet_small" in row.inner_text()
    screenshot(page, "jobs")


def test_cancel_a_running_job_from_its_page(stack, page):
    job_id = submit(stack, epochs=50, max_steps=100000)
    page.goto(stack.url + f"/#/job/{job_id}")
    page.locator(".page-head .badge[data-status='running']").wait_for(timeout=60_000)
    page.locator("[data-action='cancel']").click()
    page.locator(".page-head .badge[data-status='cancelled']").wait_for(timeout=60_000)
    assert page.locator("[data-action='retry']").is_visible()


def test_compare_two_finished_runs_shows_only_the_differing_config(stack, page):
    a = submit(stack, batch_size=16, max_steps=3)
    b = submit(stack, batch_size=32, max_steps=3, temperature=0.2)
    with stack.client() as c:
        for job_id in (a, b):
            assert wait_job(c, job_id, timeout_s=120)["status"] == "succeeded"
    page.goto(stack.url + f"/#/compare?ids={a},{b}")
    diff = page.locator("table[data-diff]")
    diff.wait_for()
    fields = diff.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.field)")
    assert fields == ["config.batch_size", "config.temperature"]
    assert diff.locator("tr[data-field='config.batch_size'] td").all_inner_texts()[1:] == ["16", "32"]
    page.locator(".charts[data-points]").wait_for()
    assert int(page.locator(".charts[data-points]").get_attribute("data-points")) == 6
    screenshot(page, "compare")


def test_form_shows_the_api_validation_error_next_to_the_field(stack, page):
    page.goto(stack.url + "/#/new")
    set_field(page, "config.batch_size", "1")
    page.get_by_role("button", name="Start run").click()
    error = page.locator("[data-field='config.batch_size'] .field-error")
    error.wait_for()
    assert "greater than or equal to 2" in error.inner_text()
    screenshot(page, "new-run")
    assert hash_of(page) == "#/new"


def test_upload_a_zip_and_see_its_summary_samples_and_views(stack, page, tmp_path):
    archive = tmp_path / "shapes.zip"
    archive.write_bytes(image_zip(num_per_class=12, size=16))
    page.goto(stack.url + "/#/datasets")
    page.locator("input[type=file]").set_input_files(str(archive))
    page.get_by_role("button", name="Upload").click()
    page.locator("[data-num-images]").wait_for()
    assert page.locator("[data-num-images]").inner_text() == "24"
    samples = page.locator("[data-samples] figure")
    samples.first.wait_for()
    assert samples.count() == 24
    assert set(page.locator("[data-samples] figcaption").all_inner_texts()) == {"disc", "bar"}
    page.get_by_role("button", name="Show augmented views").click()
    page.locator("[data-augment] img").wait_for(timeout=120_000)
    screenshot(page, "datasets")


def test_key_prompt_and_a_second_key_sees_an_empty_list(tmp_path, page):
    first, second = "dash-key-aaaaaaaaaaaa", "dash-key-bbbbbbbbbbbb"
    with run_api_server(tmp_path / "data", keys=[first, second]) as api:
        with api.client(first) as c:
            assert c.post("/v1/jobs", json={"type": "pretrain", "config": TINY}).status_code == 202
        page.goto(api.url + "/")
        dialog = page.locator("#key-dialog[open]")
        dialog.wait_for()
        screenshot(page, "key-prompt")
        page.fill("#key-input", "not-a-key")
        page.keyboard.press("Enter")
        page.locator("#key-error", has_text="invalid API key").wait_for()
        page.fill("#key-input", first)
        page.keyboard.press("Enter")
        page.locator("tr[data-job]").first.wait_for()
        assert page.locator("tr[data-job]").count() == 1
        assert page.evaluate("Object.values(sessionStorage)") == [first]
        assert page.context.cookies() == [] and first not in page.url

        page.get_by_role("button", name="Forget key").click()
        dialog.wait_for()
        page.fill("#key-input", second)
        page.keyboard.press("Enter")
        page.locator("td.empty", has_text="No jobs yet").wait_for()
        assert page.locator("tr[data-job]").count() == 0


def test_jobs_page_pages_and_filters(tmp_path, page):
    from service.control.settings import Settings
    from tests.fixtures.control import open_plane, submit

    with run_api_server(tmp_path / "data") as api:
        with open_plane(Settings(data_dir=api.data_dir)) as plane:  # jobs made as the API makes them
            for i in range(30):
                job = submit(plane, "local", {"type": "pretrain", "config": {**TINY, "batch_size": 2 + i}})
                if i % 3 == 0:
                    plane.lifecycle.cancel(job.id)
        page.goto(api.url + "/#/jobs")
        page.locator("tr[data-job]").first.wait_for()
        assert page.locator("tr[data-job]").count() == 25
        assert "1–25 of 30" in page.locator(".toolbar").inner_text()
        assert page.locator("tr[data-job] td:nth-child(6)").first.inner_text() == "31"  # newest first
        page.get_by_role("button", name="Older ›").click()
        page.locator(".toolbar", has_text="26–30 of 30").wait_for()
        assert page.locator("tr[data-job]").count() == 5
        page.locator("select[data-filter='status']").select_option("cancelled")
        page.locator(".toolbar", has_text="1–10 of 10").wait_for()
        assert set(page.locator("tr[data-job] .badge").all_inner_texts()) == {"cancelled"}


def test_a_sweep_page_shows_its_members_scores_and_plot(stack, page):
    evaluate = {"train": {"source": "builtin:digits", "image_size": 16, "max_images": 200},
                "test": {"source": "builtin:digits", "split": "test", "image_size": 16, "max_images": 100},
                "classifier": "knn"}
    with stack.client() as c:
        r = c.post("/v1/jobs", json={"type": "sweep", "config": {**TINY, "max_steps": 3},
                                     "grid": {"method": ["dcl", "simclr"]}, "evaluate": evaluate})
        assert r.status_code == 202, r.text
        sweep_id = r.json()["id"]
        assert wait_job(c, sweep_id, timeout_s=240)["status"] == "succeeded"
    page.goto(stack.url + f"/#/job/{sweep_id}")
    page.locator(".figure img").wait_for()
    rows = page.locator("table.sweep-rows tbody tr")
    assert rows.count() == 2
    assert [t.strip() for t in rows.locator("td:nth-child(3)").all_inner_texts()] == ['method="dcl"', 'method="simclr"']
    assert all(t.endswith("%") for t in rows.locator("td:nth-child(5)").all_inner_texts())  # kNN scores
    by_setting = page.locator("h4:has-text('By setting') + table tbody tr td:nth-child(4)").all_inner_texts()
    assert len(by_setting) == 2 and all("%" in t and "NaN" not in t for t in by_setting), by_setting
    screenshot(page, "sweep")
