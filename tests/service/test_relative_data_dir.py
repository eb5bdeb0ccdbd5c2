"""`make run`'s set-up: the data folder given relative to where `dcl serve` started
(`./dcl-data`). It is made absolute at start, so the augment preview (a subprocess in a folder
of its own) finds the dataset (in a browser: tests/dashboard/test_first_hour.py); and a
preview's error never shows the server's folders."""

from __future__ import annotations

from pathlib import Path

from service.api.previews import _public
from service.control.settings import Settings


def test_settings_make_every_folder_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=Path("dcl-data"), cache_dir=Path("cache-here"))
    assert settings.data_dir == tmp_path / "dcl-data"
    assert settings.datasets_dir == tmp_path / "dcl-data" / "datasets"
    assert settings.cache_dir == tmp_path / "cache-here"


def test_a_preview_error_names_no_server_folder(tmp_path):
    dataset = tmp_path / "data" / "datasets" / "ds_1"
    message = f"dataset source '{dataset}/images': no such file or folder (in {tmp_path}/work)"
    assert _public(message, dataset, tmp_path / "work") == "dataset source 'the dataset/images': no such file or folder (in .)"
