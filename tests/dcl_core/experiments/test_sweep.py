"""Sweep requests: grid expansion and validation up front, and the table of results."""

from __future__ import annotations

import csv
import io

import pytest
from pydantic import ValidationError

from dcl_core.jobs.sweep import MAX_POINTS, SweepJob
from dcl_core.experiments.sweep import results_csv, sweep_result

BASE = {"encoder": "convnet_small", "epochs": 2}
EVALUATE = {"train": "builtin:digits", "test": {"source": "builtin:digits", "split": "test"}, "classifier": "knn"}


def test_grid_expands_to_one_validated_member_per_point_with_dotted_paths():
    job = SweepJob(config=BASE, grid={"method": ["dcl", "simclr"], "augment.crop_scale": [[0.2, 1.0], [0.5, 1.0]]},
                   evaluate=EVALUATE)
    members = job.child_specs()
    assert [(m.config.method, m.config.augment.crop_scale) for m in members] == [
        ("dcl", (0.2, 1.0)), ("dcl", (0.5, 1.0)), ("simclr", (0.2, 1.0)), ("simclr", (0.5, 1.0))]
    assert all(m.type == "pretrain" and m.config.evaluate.classifier == "knn" and m.config.epochs == 2
               for m in members)


@pytest.mark.parametrize("grid, message", [
    ({"batch_size": [64, 1]}, 'grid point {"batch_size": 1}: batch_size'),
    ({"augment.crop_scale": [[0.5, 2.0]]}, "crop_scale"),
    ({"bacth_size": [64]}, "has no field 'bacth_size'"),
    ({"augment.nope": [1]}, "augment has no field 'nope'"),
    ({"batch_size": []}, "at least one value"),
    ({"seed": list(range(MAX_POINTS + 1))}, f"more than the {MAX_POINTS}"),
    ({"evaluate.classifier": ["knn"]}, "evaluate cannot be swept"),
])
def test_a_bad_grid_is_rejected_naming_the_field_or_the_point(grid, message):
    with pytest.raises(ValidationError, match="grid") as info:
        SweepJob(config=BASE, grid=grid)
    assert message in str(info.value)


def member(job_id, status, method, batch, seed, score=None, error=None):
    result = {"scores": {"linear_top1": score}} if score is not None else None
    return {"id": job_id, "status": status, "error": error, "result": result,
            "spec": {"config": {"method": method, "batch_size": batch, "seed": seed}}}


def test_the_table_has_a_row_a_member_and_mean_and_std_over_seeds():
    members = [member("a", "succeeded", "dcl", 32, 0, 0.6), member("b", "succeeded", "dcl", 32, 1, 0.8),
               member("c", "failed", "simclr", 32, 0, error="loss became nan"),
               member("d", "succeeded", "simclr", 32, 1, 0.5), member("e", "cancelled", "simclr", 64, 0)]
    result = sweep_result(["method", "batch_size", "seed"], members)
    assert result["swept"] == ["method", "batch_size", "seed"]
    assert [r["error"] for r in result["rows"]] == [None, None, "loss became nan", None, "cancelled"]
    assert result["rows"][2]["scores"] == {} and result["rows"][0]["params"] == {"method": "dcl", "batch_size": 32,
                                                                                  "seed": 0}
    dcl, simclr, simclr64 = result["summary"]
    assert dcl["params"] == {"method": "dcl", "batch_size": 32} and dcl["n"] == 2
    assert dcl["mean"]["linear_top1"] == pytest.approx(0.7)
    assert dcl["std"]["linear_top1"] == pytest.approx(0.1414213, rel=1e-5)  # sample std of 0.6, 0.8
    assert simclr["n"] == 1 and simclr["std"] == {"linear_top1": 0.0}
    assert simclr64 == {"params": {"method": "simclr", "batch_size": 64}, "n": 0, "mean": {}, "std": {}}
    rows = list(csv.DictReader(io.StringIO(results_csv(result))))
    assert rows[0] == {"job_id": "a", "status": "succeeded", "method": "dcl", "batch_size": "32", "seed": "0",
                       "linear_top1": "0.6", "error": "", "linear_top1_pairs": "", "linear_top1_ci95_low": "",
                       "linear_top1_ci95_high": ""}
    assert rows[2]["error"] == "loss became nan" and rows[2]["linear_top1"] == ""
    # dcl and simclr share seed 1 at batch 32 (one pair: no interval); nothing scored at 64.
    assert result["differences"] == [
        {"params": {"batch_size": 32}, "a": "dcl", "b": "simclr", "n": {"linear_top1": 1},
         "mean": {"linear_top1": pytest.approx(0.3)}, "ci95": {"linear_top1": None}},
        {"params": {"batch_size": 64}, "a": "dcl", "b": "simclr", "n": {}, "mean": {}, "ci95": {}}]
    assert [(r["status"], r["method"], r["batch_size"], r["linear_top1_pairs"], r["linear_top1_ci95_low"])
            for r in rows[5:]] == [("difference", "dcl - simclr", "32", "1", "n/a"),
                                   ("difference", "dcl - simclr", "64", "0", "")]


def test_paired_differences_match_seeds_and_give_a_t_interval():
    # dcl beats simclr by 2, 3 and 4 points on seeds 0-2; seed 3 ran for dcl only (no pair).
    scores = {("dcl", 0): 0.52, ("dcl", 1): 0.63, ("dcl", 2): 0.74, ("dcl", 3): 0.99,
              ("simclr", 0): 0.50, ("simclr", 1): 0.60, ("simclr", 2): 0.70,
              ("dclw", 0): 0.51, ("dclw", 1): 0.61, ("dclw", 2): 0.71}
    members = [member(f"{m}{s}", "succeeded", m, 64, s, score) for (m, s), score in scores.items()]
    members.append(member("simclr3", "failed", "simclr", 64, 3, error="diverged"))
    result = sweep_result(["method", "batch_size", "seed"], members)
    pairs = {(d["a"], d["b"]): d for d in result["differences"]}
    assert list(pairs) == [("dcl", "simclr"), ("dcl", "dclw"), ("simclr", "dclw")]  # in grid order
    diff = pairs[("dcl", "simclr")]
    assert diff["params"] == {"batch_size": 64} and diff["n"] == {"linear_top1": 3}
    assert diff["mean"]["linear_top1"] == pytest.approx(0.03)
    # mean 0.03, sample std 0.01, t(0.975, 2) = 4.3027: 0.03 -+ 4.3027 * 0.01 / sqrt(3)
    low, high = diff["ci95"]["linear_top1"]
    assert (low, high) == (pytest.approx(0.03 - 0.024842, abs=1e-5), pytest.approx(0.03 + 0.024842, abs=1e-5))
    assert pairs[("simclr", "dclw")]["mean"]["linear_top1"] == pytest.approx(-0.01)
    assert sweep_result(["method", "batch_size"], members)["differences"] == []  # no seeds crossed: none


@pytest.mark.parametrize("df, t", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (5, 2.5706), (10, 2.2281),
                                   (30, 2.0423), (120, 1.9799), (10_000, 1.9602)])
def test_t_quantile_matches_the_tables(df, t):
    from dcl_core.experiments.stats import t_quantile_975

    assert t_quantile_975(df) == pytest.approx(t, abs=1e-4)


def test_members_are_named_after_their_grid_point():
    from dcl_core.experiments.sweep import member_name

    assert member_name({"method": "dcl", "batch_size": 32, "seed": 1}) == "dcl b32 seed1"
    assert member_name({"augment.crop_scale": [0.2, 1.0], "temperature": 0.5}) == "crop_scale[0.2,1.0] temperature0.5"
    assert len(member_name({"encoder": "x" * 300})) == 100


def test_the_plot_is_a_png_with_a_panel_for_the_differences(tmp_path):
    from PIL import Image

    from dcl_core.experiments.sweep_plot import plot_accuracy

    members = [member(f"j{i}", "succeeded", m, b, s, 0.5 + b / 1000 + s / 100 + (m == "dcl") / 50)
               for i, (m, b, s) in enumerate((m, b, s) for m in ("dcl", "simclr") for b in (32, 128) for s in (0, 1))]
    result = sweep_result(["method", "batch_size", "seed"], members)
    plot_accuracy(result, tmp_path / "accuracy.png")
    assert (tmp_path / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    plot_accuracy({**result, "differences": []}, tmp_path / "plain.png")
    # The second panel makes the picture taller.
    assert Image.open(tmp_path / "accuracy.png").height > Image.open(tmp_path / "plain.png").height
