"""benchmarks/reproduce_dcl_cifar.py: the parts that need no running sweep (the held-out
split, the table, the RESULTS.md section, the resume check)."""

from __future__ import annotations

import importlib.util
import zipfile
from argparse import Namespace
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce_dcl_cifar.py"
spec = importlib.util.spec_from_file_location("reproduce_dcl_cifar", SCRIPT)
repro = importlib.util.module_from_spec(spec)
spec.loader.exec_module(repro)

SIZES = {"cat": 10, "dog": 20, "frog": 30}


def zip_names() -> list[str]:
    names = [f"cifar/{label}/{i:04d}.jpg" for label, n in SIZES.items() for i in range(n)]
    return names + ["cifar/", "cifar/cat/", "__MACOSX/cifar/cat/._0000.jpg", "cifar/README.txt", "cifar/.hidden.jpg"]


def test_the_split_holds_out_the_same_share_of_every_class():
    train, held = repro.stratified_split(zip_names(), holdout=12, seed=0)
    assert len(held) == 12 and len(train) == 48
    assert set(train).isdisjoint(held)
    assert set(train) | set(held) == {n for n in zip_names() if n.endswith(".jpg") and "/." not in n
                                      and not n.startswith("__MACOSX")}
    per_class = {label: sum(f"/{label}/" in name for name in held) for label in SIZES}
    assert per_class == {"cat": 2, "dog": 4, "frog": 6}


def test_the_split_is_fixed_by_its_seed():
    assert repro.stratified_split(zip_names(), 12, seed=0) == repro.stratified_split(list(reversed(zip_names())), 12, seed=0)
    assert repro.stratified_split(zip_names(), 12, seed=0)[1] != repro.stratified_split(zip_names(), 12, seed=1)[1]


def test_quotas_round_to_the_exact_holdout():
    quotas = repro.holdout_quotas({"a": 3, "b": 3, "c": 4}, holdout=5)
    assert sum(quotas.values()) == 5 and quotas["c"] == 2
    for bad in (0, 10, 11):
        with pytest.raises(ValueError, match="--holdout must be between 1 and 9"):
            repro.holdout_quotas({"a": 3, "b": 3, "c": 4}, holdout=bad)


def test_write_split_copies_every_image_into_exactly_one_zip(tmp_path):
    source = tmp_path / "images.zip"
    with zipfile.ZipFile(source, "w") as archive:
        for name in zip_names():
            if not name.endswith("/"):
                archive.writestr(name, name.encode())
    train_zip, held_zip = repro.write_split(source, tmp_path / "out", holdout=6, seed=3)
    with zipfile.ZipFile(train_zip) as train, zipfile.ZipFile(held_zip) as held:
        assert len(train.namelist()) == 54 and len(held.namelist()) == 6
        assert all(held.read(name) == name.encode() for name in held.namelist())
        assert set(train.namelist()).isdisjoint(held.namelist())


def test_the_sweep_request_evaluates_on_the_held_out_zip():
    body = repro.sweep_request("ds_train", "ds_held", epochs=7, encoder="resnet18", device="cuda")
    assert body["type"] == "sweep"
    assert body["grid"] == {"method": ["dcl", "simclr"], "batch_size": [32, 64, 128, 256]}
    assert body["config"]["dataset"] == {"source": "dataset:ds_train"}
    assert body["config"]["temperature"] == 0.1 and body["config"]["small_stem"] is True
    assert body["evaluate"] == {"train": "dataset:ds_train", "test": "dataset:ds_held", "classifier": "both"}


RESULT = {
    "swept": ["method", "batch_size"],
    "rows": [
        {"job_id": "job_1", "status": "succeeded", "params": {"method": "dcl", "batch_size": 32},
         "scores": {"linear_top1": 0.8461, "knn_top1": 0.8012}, "error": None},
        {"job_id": "job_2", "status": "failed", "params": {"method": "simclr", "batch_size": 32},
         "scores": {}, "error": "CUDA out of memory | try less"},
    ],
    "summary": [{"params": {"method": "dcl", "batch_size": 32}, "n": 2,
                 "mean": {"linear_top1": 0.8461, "knn_top1": 0.8012}, "std": {"linear_top1": 0.0123, "knn_top1": 0.0}}],
}


def test_the_table_has_a_row_per_grid_point_in_percent():
    lines = repro.results_table(RESULT).splitlines()
    assert lines[0] == "| method | batch_size | linear top-1 % | kNN top-1 % | status |"
    assert lines[2] == "| dcl | 32 | 84.6 | 80.1 | succeeded |"
    assert lines[3] == "| simclr | 32 | - | - | failed: CUDA out of memory \\| try less |"
    assert "| method | batch_size | n | linear_top1 | knn_top1 |" in lines
    assert "| dcl | 32 | 2 | 84.6 ± 1.2 | 80.1 ± 0.0 |" in lines


def test_one_seed_a_point_has_no_summary_table():
    single = {**RESULT, "summary": [{**RESULT["summary"][0], "n": 1}]}
    assert "over seeds" not in repro.results_table(single)


def test_the_results_section_is_replaced_not_repeated():
    first = repro.replace_section("# Benchmark results\n\n## Other\ntext\n", "SECTION_A")
    assert first.endswith("SECTION_A\n") and "## Other\ntext" in first
    marked = f"{repro.SECTION_START}\nold\n{repro.SECTION_END}"
    text = repro.replace_section(f"# R\n\n{marked}\n\n## After\n", f"{repro.SECTION_START}\nnew\n{repro.SECTION_END}")
    assert "old" not in text and text.count(repro.SECTION_START) == 1 and text.endswith("## After\n")


def test_a_saved_run_is_resumed_only_with_the_same_options():
    args = Namespace(data="a.zip", holdout=5000, seed=0, epochs=200, encoder="resnet18", device="auto",
                     url="http://127.0.0.1:8000")
    state = {**vars(args), "sweep_id": "job_x"}
    assert repro.same_run(state, args) is None
    assert "epochs=200" in repro.same_run(state, Namespace(**{**vars(args), "epochs": 100}))


def test_the_command_shown_in_results_never_holds_the_key():
    shown = repro.shown_argv(["--key", "s3cret", "--epochs", "5", "--key=s3cret", "--fresh"])
    assert shown == ["--key", "KEY", "--epochs", "5", "--key=KEY"]


def test_progress_counts_members_by_status_in_any_of_the_shapes_a_parent_may_give():
    assert repro.child_counts({"counts": {"running": 2, "queued": 6}}) == {"running": 2, "queued": 6}
    assert repro.child_counts({"succeeded": 1, "total": 8}) == {"succeeded": 1, "total": 8}
    assert repro.child_counts([{"status": "running"}, {"status": "running"}, {"id": "x"}]) == {"running": 2}
    assert repro.child_counts(None) == {}
