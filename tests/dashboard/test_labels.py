"""Names, tags, notes and scores in a real browser against the real API: the jobs list shows
names and tags and filters by them, sorts by score; an encoder's page shows the probes that
scored it and edits its name, tags and notes; a sweep's page shows its paired differences.
Jobs are made and finished through the control plane (as a worker would), so no worker runs."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import screenshot
from tests.dashboard.test_pages import TINY
from tests.fixtures.waiting import wait_until
from tests.fixtures.control import open_plane, submit
from tests.fixtures.servers import run_api_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBE = {"type": "linear_probe", "train": "builtin:digits", "test": {"source": "builtin:digits", "split": "test"}}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """An API with: two named, tagged encoders (one scored by its own evaluate, one by a probe),
    an untagged job, and a DCL-vs-SimCLR sweep over three seeds, all finished."""
    from dcl_core.experiments.sweep_plot import plot_accuracy
    from service.control.settings import Settings

    with run_api_server(tmp_path_factory.mktemp("labels") / "data") as api:
        with open_plane(Settings(data_dir=api.data_dir), plot=plot_accuracy) as plane:
            lc = plane.lifecycle

            def finish(job_id: str, result: dict) -> None:
                lc.claim(job_id, "w")
                lc.succeed(job_id, "w", result)

            def job(body: dict, result: dict | None = None, **labels):
                made = submit(plane, "local", {**body, **labels})
                if result is not None:
                    finish(made.id, result)
                return made

            plain = job({"type": "pretrain", "config": TINY})
            evaluated = job({"type": "pretrain", "config": TINY}, {"scores": {"linear_top1": 0.81}},
                            name="r18 evaluated", tags=["cifar", "baseline"])
            probed = job({"type": "pretrain", "config": {**TINY, "method": "simclr"}}, {"steps": 3},
                         name="r18 probed", tags=["cifar"])
            probe = job({**PROBE, "encoder_job": probed.id}, {"accuracy": 0.93, "classifier": "logistic"},
                        name="probe of r18")
            sweep = job({"type": "sweep", "config": TINY,
                         "grid": {"method": ["dcl", "simclr"], "batch_size": [16, 32], "seed": [0, 1, 2]}},
                        name="dcl vs simclr", tags=["sweep"])
            for member in plane.jobs.children(sweep.id):
                config = member.spec.config
                # DCL gains 2.0, 2.6 and 1.7 points on seeds 0-2 at either batch size.
                gain = (0.02, 0.026, 0.017)[config.seed] if config.method == "dcl" else 0.0
                score = 0.5 + config.batch_size / 1000 + config.seed / 100 + gain
                finish(member.id, {"scores": {"linear_top1": score}})
            assert plane.jobs.get(sweep.id).status == "succeeded"
        yield api, {"plain": plain.id, "evaluated": evaluated.id, "probed": probed.id, "probe": probe.id,
                    "sweep": sweep.id}


def rows(page) -> list[str]:
    return page.locator("tr[data-job]").evaluate_all("rows => rows.map(r => r.dataset.job)")


def test_the_jobs_list_shows_names_and_tags_filters_and_sorts_by_score(made, page):
    api, ids = made
    page.goto(api.url + "/#/jobs")
    row = page.locator(f"tr[data-job='{ids['evaluated']}']")
    row.wait_for()
    assert row.locator(".job-name").inner_text() == "r18 evaluated"
    assert row.locator(".tag").all_inner_texts() == ["baseline", "cifar"]
    assert "linear 93.0%" in page.locator(f"tr[data-job='{ids['probed']}'] td:nth-child(11)").inner_text()  # its probe's
    screenshot(page, "jobs-names-tags")

    page.fill("input[data-filter='text']", "tag:cifar")
    wait_until(lambda: set(rows(page)) == {ids["evaluated"], ids["probed"]})
    page.fill("input[data-filter='text']", "tag:cifar PROBED")
    wait_until(lambda: rows(page) == [ids["probed"]])
    page.fill("input[data-filter='text']", "")
    wait_until(lambda: len(rows(page)) > 2)
    page.locator(f"tr[data-job='{ids['evaluated']}'] button.tag[data-tag='baseline']").click()
    wait_until(lambda: rows(page) == [ids["evaluated"]])
    assert page.locator("input[data-filter='text']").input_value() == "tag:baseline"

    page.fill("input[data-filter='text']", "tag:cifar")
    page.locator("select[data-filter='sort']").select_option("-score")
    wait_until(lambda: rows(page) == [ids["probed"], ids["evaluated"]])  # 93% (its probe) above 81%


def test_an_encoders_page_shows_its_evaluations_and_edits_its_labels(made, page):
    api, ids = made
    page.goto(api.url + f"/#/job/{ids['probed']}")
    evaluation = page.locator(f"tr[data-evaluation='{ids['probe']}']")
    evaluation.wait_for()
    assert evaluation.locator("td").all_inner_texts() == ["probe of r18", "linear_probe", "logistic", "succeeded",
                                                          "93.0%"]
    assert "linear 93.0%" in page.locator(".stats").inner_text()
    assert page.locator("h1[data-name]").inner_text().startswith("r18 probed")

    page.fill("[data-label='name']", "r18 simclr, probed")
    page.fill("[data-label='notes']", "probe beats the evaluate run")
    page.locator("[data-action='save-labels']").click()
    page.locator("h1[data-name]", has_text="r18 simclr, probed").wait_for()
    page.fill("[data-label='add-tag']", "prod")
    page.keyboard.press("Enter")
    page.locator("[data-labels] .tag[data-tag='prod']").wait_for()
    page.locator("[data-labels] .tag[data-tag='cifar'] .tag-remove").click()
    wait_until(lambda: page.locator("[data-labels] .tag[data-tag='cifar']").count() == 0)
    page.fill("[data-label='add-tag']", "not a tag")
    page.keyboard.press("Enter")
    page.locator("[data-labels] .alert.error", has_text="is not a tag").wait_for()
    screenshot(page, "encoder-evaluations")
    with api.client() as c:
        job = c.get(f"/v1/jobs/{ids['probed']}").json()
    assert (job["name"], job["tags"], job["notes"]) == ("r18 simclr, probed", ["prod"], "probe beats the evaluate run")


def test_a_sweeps_page_shows_paired_differences_with_intervals(made, page):
    api, ids = made
    page.goto(api.url + f"/#/job/{ids['sweep']}")
    table = page.locator("table.differences")
    table.wait_for()
    first, second = (row.locator("td").all_inner_texts() for row in table.locator("tbody tr").all())
    # mean 2.1, std 0.46 over 3 pairs: t(0.975, 2) = 4.303 gives 2.1 -+ 1.1
    assert first == ["batch_size=16", "dcl − simclr", "linear_top1", "3", "+2.1", "[+1.0, +3.2]"]
    assert second[0] == "batch_size=32" and second[4:] == ["+2.1", "[+1.0, +3.2]"]
    page.locator(".figure img").wait_for()
    assert page.locator("table.sweep-rows tbody tr").count() == 12
    screenshot(page, "sweep-differences")
    page.goto(api.url + "/#/jobs")
    page.fill("input[data-filter='text']", "tag:sweep")
    wait_until(lambda: len(rows(page)) == 13)  # the sweep and its members, named after their point
    assert "dcl b16 seed0" in page.locator("tr[data-job] .job-name").all_inner_texts()
