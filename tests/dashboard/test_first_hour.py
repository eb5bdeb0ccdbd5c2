"""The dashboard's rough edges a new user hit, each in a real browser against the real API. Job
states are made through the control plane as a worker would make them (claim, progress,
succeed), so each page is seen in the state it is about without waiting on training.
`DCL_SCREENSHOTS=DIR` keeps the pictures (docs/dashboard-new-run.png and docs/dashboard-sweep.png
come from here)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx

import pytest

from service.control.models import ArtifactFile
from service.control.settings import Settings
from tests.dashboard.conftest import screenshot
from tests.fixtures.control import open_plane, submit
from tests.fixtures.servers import dcl_env, free_port, run_api_server, stop_process, wait_for_port
from tests.integration.helpers import image_zip
from tests.fixtures.waiting import wait_until

pytestmark = [pytest.mark.integration]

OWNER = "local"  # auth off
CONFIG = {"encoder": "convnet_small", "dataset": {"source": "builtin:digits", "image_size": 16}, "batch_size": 32,
          "epochs": 1, "device": "cpu"}
EVALUATE = {"train": "builtin:digits", "test": {"source": "builtin:digits", "split": "test"}, "classifier": "knn"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("first-hour") / "data"
    # Many jobs stay queued here (no worker runs): no cap on them.
    with run_api_server(data_dir, env={"DCL_MAX_ACTIVE_JOBS_PER_KEY": "10000"}) as api, \
            open_plane(Settings(data_dir=api.data_dir)) as plane:
        plane.workers.seen("dcl-1@cpu-box", {"node": "dcl-1@cpu-box", "queues": "gpu,cpu", "gpus": 1, "cuda": False})
        api.plane = plane
        yield api


def pretrain(plane, **config):
    return submit(plane, OWNER, {"type": "pretrain", "config": {**CONFIG, **config}})


def run(plane, job_id, steps=10, rows=(), worker="w1"):
    plane.lifecycle.claim(job_id, worker)
    plane.lifecycle.progress(job_id, worker, steps, total_steps=steps, epoch=1.0, rows=list(rows))


def finish(plane, job_id, result=None, worker="w1"):
    run_dir = plane.storage.run_dir(job_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "encoder.json").write_text("{}")
    plane.lifecycle.succeed(job_id, worker, result or {}, [ArtifactFile("encoder.json", 2, hashlib.sha256(b"{}").hexdigest())])


def test_retry_is_offered_only_where_it_can_work(stack, page):
    done = pretrain(stack.plane)
    run(stack.plane, done.id)
    finish(stack.plane, done.id)
    failed = pretrain(stack.plane)
    run(stack.plane, failed.id)
    stack.plane.lifecycle.fail(failed.id, "the dataset is gone")
    page.goto(f"{stack.url}/#/job/{done.id}")
    page.locator(".page-head .badge[data-status='succeeded']").wait_for()
    assert page.locator("[data-action='retry']").count() == 0
    page.goto(f"{stack.url}/#/job/{failed.id}")
    page.locator("[data-action='retry']").wait_for()


def test_a_probe_page_has_no_empty_training_curves(stack, page):
    encoder = pretrain(stack.plane)
    run(stack.plane, encoder.id)
    finish(stack.plane, encoder.id)
    probe = submit(stack.plane, OWNER, {"type": "linear_probe", "encoder_job": encoder.id, "train": "builtin:digits",
                                        "test": {"source": "builtin:digits", "split": "test"}})
    run(stack.plane, probe.id, steps=1)
    finish(stack.plane, probe.id, {"accuracy": 0.9, "per_class_accuracy": [0.9, 0.9], "classes": ["a", "b"],
                                   "num_train": 10, "num_test": 4, "classifier": "logistic", "seconds": 1.0})
    page.goto(f"{stack.url}/#/job/{probe.id}")
    page.locator("text=Per-class accuracy").wait_for()
    assert page.locator("text=Training curves").count() == 0 and page.locator(".xtoggle").count() == 0


def test_a_job_scoring_its_encoder_says_evaluating_not_eta_0s(stack, page):
    job = pretrain(stack.plane, evaluate=EVALUATE)
    run(stack.plane, job.id, steps=20, rows=[{"step": s, "loss": 1.0 / s, "lr": 0.01} for s in range(1, 21)])
    page.goto(f"{stack.url}/#/job/{job.id}")
    page.locator(".stat [data-phase='evaluating']").wait_for()
    page.goto(f"{stack.url}/#/jobs")
    row = page.locator(f"tr[data-job='{job.id}']")
    row.wait_for()
    assert row.locator("td:nth-child(9)").inner_text() == "evaluating"


def test_learning_rate_ticks_are_all_different(stack, page):
    job = pretrain(stack.plane)
    rows = [{"step": s, "loss": 2.0 - s / 100, "lr": 0.015 + 0.00001 * s} for s in range(1, 101)]
    run(stack.plane, job.id, steps=100, rows=rows)
    page.goto(f"{stack.url}/#/job/{job.id}")
    chart = page.locator(".chart:has(.chart-title:text-is('Learning rate'))")
    chart.wait_for()
    wait_until(lambda: chart.get_attribute("data-yticks"))
    ticks = chart.get_attribute("data-yticks").split("|")
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), ticks


def test_the_config_panel_wraps_long_values(stack, page):
    long = "a-long-setting-value-" * 8  # one JSON string of 168 characters, no space to break at
    job = pretrain(stack.plane, encoder="timm:vit_small_patch16_224", encoder_kwargs={"note": long.replace("-", "_")})
    page.goto(f"{stack.url}/#/job/{job.id}")
    panel = page.locator("pre[data-config]")
    panel.wait_for()
    assert long.replace("-", "_") in panel.inner_text().replace("\n", "")
    assert panel.evaluate("e => e.scrollWidth <= e.clientWidth")


def make_sweep(plane, seeds=1):
    grid = {"method": ["dcl", "simclr"], "batch_size": [32, 64]}
    if seeds > 1:
        grid["seed"] = list(range(seeds))
    sweep = submit(plane, OWNER, {"type": "sweep", "config": CONFIG, "grid": grid, "evaluate": EVALUATE})
    members = plane.jobs.children(sweep.id)
    return sweep, members


def test_a_running_sweep_lists_its_members_with_settings_progress_and_live_loss(stack, page):
    sweep, members = make_sweep(stack.plane)
    first = members[0]
    run(stack.plane, first.id, steps=10, rows=[{"step": s, "loss": 2.0 - s / 10} for s in range(1, 11)])
    page.goto(f"{stack.url}/#/job/{sweep.id}")
    table = page.locator("[data-members] table")
    table.wait_for()
    assert table.locator("thead th").evaluate_all("ths => ths.map(t => t.textContent)") == ["Job", "Status", "method", "batch_size", "Progress", "Loss", "Scores"]
    assert table.locator("tbody tr").count() == 4
    row = table.locator(f"tr[data-member='{first.id}']")
    assert row.locator("td:nth-child(3)").inner_text() == '"dcl"' and row.locator("td:nth-child(4)").inner_text() == "32"
    wait_until(lambda: row.locator("[data-loss]").inner_text() == "1")
    stack.plane.lifecycle.progress(first.id, "w1", 12, rows=[{"step": 12, "loss": 0.5}])
    wait_until(lambda: row.locator("[data-loss]").inner_text() == "0.5")  # live: it moved on by itself
    assert "12 / 10" in row.inner_text() or "evaluating" in row.inner_text()
    screenshot(page, "dashboard-sweep")


def test_one_seed_shows_a_dash_not_plus_minus_zero(stack, page):
    sweep, members = make_sweep(stack.plane)
    for i, member in enumerate(members):
        run(stack.plane, member.id)
        finish(stack.plane, member.id, {"scores": {"knn_top1": 0.5 + i / 10}})
    stack.plane.lifecycle.settle_if_done(sweep.id)  # (the last member's end may have settled it already)
    assert stack.plane.jobs.get(sweep.id).status == "succeeded"
    page.goto(f"{stack.url}/#/job/{sweep.id}")
    cells = page.locator("h4:has-text('By setting') + table tbody tr td:nth-child(4)")
    cells.first.wait_for()
    assert all(t.endswith("± —") for t in cells.all_inner_texts()), cells.all_inner_texts()
    # The jobs list: the sweep once, its best score, its members under it when opened.
    page.goto(f"{stack.url}/#/jobs")
    row = page.locator(f"tr[data-job='{sweep.id}']")
    row.wait_for()
    assert page.locator("tr[data-parent]").count() == 0
    assert row.locator("[data-best]").inner_text() == "best knn 80.0%"
    row.locator(f"[data-toggle='{sweep.id}']").click()
    page.locator(f"tr[data-parent='{sweep.id}']").first.wait_for()
    assert page.locator(f"tr[data-parent='{sweep.id}']").count() == 4
    row.locator(f"[data-toggle='{sweep.id}']").click()
    wait_until(lambda: page.locator(f"tr[data-parent='{sweep.id}']").count() == 0)


def test_compare_names_jobs_by_what_differs_and_sweeps_by_their_grid(stack, page):
    a = pretrain(stack.plane, batch_size=16)
    b = pretrain(stack.plane, batch_size=32, temperature=0.2)
    sweep, _ = make_sweep(stack.plane)
    page.goto(f"{stack.url}/#/compare?ids={a.id},{b.id}")
    legend = page.locator(".legend")
    legend.wait_for()
    assert legend.locator(".legend-item").all_inner_texts() == ["batch_size=16, temperature=0.1", "batch_size=32, temperature=0.2"]
    pick = page.locator(f".pick:has(input[value='{sweep.id}'])")
    assert "method dcl/simclr · batch_size 32/64" in pick.inner_text()


def test_new_run_form_fits_a_cpu_service_and_estimates_steps(stack, page, tmp_path):
    archive = tmp_path / "shapes.zip"
    archive.write_bytes(image_zip(num_per_class=50, size=16))
    with stack.client() as c:
        assert c.post("/v1/datasets", files={"file": ("shapes.zip", archive.read_bytes())}).status_code == 201
    page.goto(f"{stack.url}/#/new")
    page.locator("[data-defaults='cpu']").wait_for()
    assert page.locator("[data-path='config.encoder']").input_value() == "convnet_small"
    assert page.locator("[data-path='config.epochs']").input_value() == "5"
    estimate = page.locator("[data-estimate]")
    assert estimate.inner_text() == "≈ 110 steps: 1,437 images / batch 64 = 22 steps an epoch × 5 epochs"
    screenshot(page, "dashboard-new-run")
    source = page.locator("[data-path='config.dataset.source']")
    assert source.evaluate("e => e.tagName") == "SELECT"
    source.select_option(label="shapes.zip (100 images)")
    page.locator("[data-estimate]", has_text="100 images / batch 64 = 1 step an epoch").wait_for()
    page.get_by_role("button", name="Start run").click()
    wait_until(lambda: page.evaluate("() => location.hash").startswith("#/job/job_"))
    job_id = page.evaluate("() => location.hash").rsplit("/", 1)[-1]
    config = stack.plane.jobs.get(job_id).spec.config
    assert (config.encoder, config.batch_size, config.epochs) == ("convnet_small", 64, 5)
    assert config.dataset.source.startswith("dataset:ds_")


def test_new_run_form_makes_every_job_type(stack, page):
    encoder = pretrain(stack.plane)
    run(stack.plane, encoder.id)
    finish(stack.plane, encoder.id)
    made = {}
    for job_type in ("sweep", "linear_probe", "embed"):
        page.goto(f"{stack.url}/#/jobs")
        page.goto(f"{stack.url}/#/new")
        page.locator("[data-jobtype]").select_option(job_type)
        if job_type == "sweep":
            page.locator("[data-path='grid']").fill('{"method": ["dcl", "simclr"], "batch_size": [32, 64]}')
            page.locator("[data-estimate]", has_text="4 runs").wait_for()
        else:
            page.locator("[data-path='encoder_job']:visible").wait_for()
        page.get_by_role("button", name="Start run").click()
        wait_until(lambda: page.evaluate("() => location.hash").startswith("#/job/job_"))
        made[job_type] = stack.plane.jobs.get(page.evaluate("() => location.hash").rsplit("/", 1)[-1])
    assert made["sweep"].spec.grid == {"method": ["dcl", "simclr"], "batch_size": [32, 64]}
    assert made["sweep"].spec.evaluate.classifier == "both"
    assert made["linear_probe"].spec.encoder_job == encoder.id
    assert made["linear_probe"].spec.test.split == "test"
    assert made["embed"].spec.encoder_job == encoder.id


def test_augmented_views_under_make_runs_relative_data_dir(page, tmp_path):
    """`make run` has DCL_DATA_DIR=./dcl-data, relative; the preview runs in a folder of its own."""
    cwd = tmp_path / "project"
    cwd.mkdir()
    port = free_port()
    log = tmp_path / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.api.app:create_app", "--factory",
                                 "--port", str(port), "--log-level", "warning"], cwd=cwd, env=dcl_env(Path("dcl-data")),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 60, proc, log)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.post("/v1/datasets", files={"file": ("shapes.zip", image_zip(num_per_class=4, size=16))})
            assert r.status_code == 201, r.text
        page.goto(f"{url}/#/datasets?id={r.json()['id']}")
        page.get_by_role("button", name="Show augmented views").click()
        page.locator("[data-augment] img").wait_for(timeout=120_000)
        assert page.locator("[data-augment] .alert").count() == 0
    finally:
        stop_process(proc)
    assert (cwd / "dcl-data" / "datasets").is_dir()
