"""Settings: one place, DCL_ variables, paths derived from the data folder."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from service.control.settings import Settings, hash_key, is_loopback


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch):
    for name in list(os.environ):
        if name.startswith("DCL_"):
            monkeypatch.delenv(name)


def test_paths_and_urls_follow_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DCL_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.artifacts_dir == tmp_path / "artifacts" and s.datasets_dir == tmp_path / "datasets"
    assert s.database_url == f"sqlite:///{tmp_path}/dcl.db"
    assert s.broker_url == f"sqla+sqlite:///{tmp_path}/broker.db" and s.embedded_broker
    assert not s.auth_enabled and s.api_key_hashes() == {}


def test_api_keys_from_a_comma_list_and_a_file(tmp_path, monkeypatch):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nfile-key-1\n\nfile-key-2  # ci\n")
    monkeypatch.setenv("DCL_API_KEYS", " k1, k2 ,")
    monkeypatch.setenv("DCL_API_KEYS_FILE", str(keys_file))
    s = Settings()
    assert s.api_keys == ["k1", "k2"]
    assert s.all_api_keys() == ["k1", "k2", "file-key-1", "file-key-2"]
    owners = s.api_key_hashes()
    assert set(owners) == {hash_key(k) for k in s.all_api_keys()}
    assert all(owner.startswith("key_") and "k1" not in owner for owner in owners.values())


def test_missing_keys_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DCL_API_KEYS_FILE", str(tmp_path / "nope"))
    with pytest.raises(ValidationError, match="does not exist"):
        Settings()


def test_distributed_urls_are_taken_as_given(monkeypatch):
    monkeypatch.setenv("DCL_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("DCL_DATABASE_URL", "postgresql+psycopg://dcl@db/dcl")
    s = Settings()
    assert s.broker_url == "redis://redis:6379/0" and not s.embedded_broker
    assert s.database_url == "postgresql+psycopg://dcl@db/dcl"


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("0.0.0.0", False), ("192.168.1.5", False), ("example.org", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback
