"""`dcl storage migrate --to s3://...` copies a file store into a bucket: datasets (their sha256
then recorded), artifacts checked against their sha256, checkpoints; a second run copies
nothing (resumable), a damaged file is reported and never uploaded, and a storage on the bucket
then reads what was copied."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dcl_core.files import sha256_file
from service.control.dataset_cache import DatasetCache
from service.control.objectstore import S3Store, parse_storage_url
from service.control.plane import ControlPlane
from service.control.settings import Settings
from service.control.storage import LocalStorage
from tests.fixtures.s3 import CREDENTIALS, s3_endpoint
from tests.fixtures.servers import REPO_ROOT, dcl_env


def _migrate(data_dir, endpoint, to: str) -> subprocess.CompletedProcess:
    env = dcl_env(data_dir, DCL_S3_ENDPOINT_URL=endpoint.url, **CREDENTIALS)
    return subprocess.run([sys.executable, "-m", "dcl_core.cli", "storage", "migrate", "--to", to],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_file_store_is_copied_into_a_bucket_resumably(tmp_path, monkeypatch):
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    settings.ensure_dirs()
    plane = ControlPlane(settings, celery=object())
    images = plane.storage.dataset_dir("ds_00000001") / "images" / "cat"
    images.mkdir(parents=True)
    (images / "0.png").write_bytes(os.urandom(300))
    plane.datasets.create("key_a", "cats", {}, 300, id="ds_00000001")
    run_dir = plane.storage.run_dir("job_00000001")
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "encoder.json").write_text("{}")
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"weights")
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (run_dir / "broken.bin").write_bytes(b"as recorded")
    plane.artifacts.put("job_00000001", [("encoder.json", 2, sha256_file(run_dir / "encoder.json")),
                                         ("broken.bin", 11, sha256_file(run_dir / "broken.bin"))])
    (run_dir / "broken.bin").write_bytes(b"changed!!!!")  # same size, other bytes

    with s3_endpoint() as endpoint:
        first = _migrate(data, endpoint, f"s3://{endpoint.bucket}/moved")
        assert first.returncode == 1, first.stdout + first.stderr  # the damaged file is reported
        assert "broken.bin does not match its recorded sha256" in first.stderr
        again = _migrate(data, endpoint, f"s3://{endpoint.bucket}/moved")
        assert "copied 0 objects" in again.stdout, again.stdout + again.stderr

        for name, value in CREDENTIALS.items():
            monkeypatch.setenv(name, value)
        store = S3Store(parse_storage_url(f"s3://{endpoint.bucket}/moved"), endpoint_url=endpoint.url, patience_s=10)
        assert store.head("jobs/job_00000001/broken.bin") is None
        there = LocalStorage(tmp_path / "w" / "artifacts", tmp_path / "w" / "datasets", remote=store,
                             cache=DatasetCache(tmp_path / "w" / "cache", 10**9))
        assert (there.fetch_job("job_00000001") / "encoder.json").read_text() == "{}"
        target = there.run_dir("job_00000001")
        assert there.fetch_checkpoint("job_00000001", target / "checkpoints" / "last.pt", target / "metrics.jsonl")
        sha = plane.datasets.get("ds_00000001").sha256
        assert sha is not None
        folder = there.dataset_folder("ds_00000001", sha)
        assert (folder / "images" / "cat" / "0.png").read_bytes() == (images / "0.png").read_bytes()


@pytest.mark.parametrize("to", ["file:///tmp/x", "gs://bucket"])
def test_migrate_refuses_what_is_not_a_bucket(tmp_path, to):
    with s3_endpoint() as endpoint:
        answer = _migrate(tmp_path / "data", endpoint, to)
    assert answer.returncode == 2 and "s3://BUCKET" in answer.stderr
