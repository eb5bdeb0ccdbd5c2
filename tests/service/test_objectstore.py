"""The object store behind `storage` (DCL_STORAGE_URL=s3://), against moto's standalone server
over real HTTP with the real boto3 client: keys from ids only, uploads checked by sha256,
multipart, the dataset cache (no network on the second use, LRU eviction), checkpoints in the
background, and an unreachable store named in the error."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from service.control.dataset_cache import DatasetCache, pack
from service.control.objectstore import S3Store, StoreUnavailable, key, parse_storage_url
from service.control.settings import Settings
from service.control.storage import LocalStorage
from tests.fixtures.s3 import CREDENTIALS, s3_endpoint
from worker.checkpoint_upload import CheckpointUploader


@pytest.fixture(scope="module")
def endpoint():
    with s3_endpoint() as found:
        yield found


@pytest.fixture
def store(endpoint, monkeypatch, request):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    prefix = request.node.name.replace("[", "-").replace("]", "")[:60]
    return S3Store(parse_storage_url(f"s3://{endpoint.bucket}/{prefix}"), endpoint_url=endpoint.url, patience_s=20)


def remote_storage(root: Path, store: S3Store, cache_bytes: int = 10**9) -> LocalStorage:
    return LocalStorage(root / "artifacts", root / "datasets", remote=store,
                        cache=DatasetCache(root / "cache", cache_bytes))


@pytest.mark.parametrize("bad", ["../x", "a/../b", "%2f", "a%2fb", "x\x00y", "", ".hidden", "a b", "..", "a//b"])
def test_a_key_is_never_made_of_user_text(bad):
    with pytest.raises(ValueError):
        key("jobs", bad)


def test_a_key_is_made_of_ids_and_engine_file_names():
    assert key("jobs", "job_0123abcd", "tensorboard/events.out.1") == "jobs/job_0123abcd/tensorboard/events.out.1"


def test_the_storage_url_forms(tmp_path):
    assert parse_storage_url("s3://bucket/some/prefix").prefix == "some/prefix"
    assert not parse_storage_url("file:///srv/dcl").remote
    assert Settings(data_dir=tmp_path).storage_url == f"file://{tmp_path}"
    for bad in ("s3://", "gs://bucket", "s3://bucket/../x", "bucket"):
        with pytest.raises(ValueError, match="DCL_STORAGE_URL"):
            Settings(data_dir=tmp_path, storage_url=bad)


def test_a_file_goes_up_and_comes_back_checked(store, tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(1000))
    sha = store.put_file("jobs/job_1/a.bin", source)
    assert store.head("jobs/job_1/a.bin") == {"size": 1000, "sha256": sha}
    assert store.head("jobs/job_1/none") is None
    assert store.get_file("jobs/job_1/a.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    with pytest.raises(StoreUnavailable, match="does not match"):
        store.get_file("jobs/job_1/a.bin", tmp_path / "wrong.bin", sha256="0" * 64)
    assert not (tmp_path / "wrong.bin").exists() and not list(tmp_path.glob(".*part"))
    assert store.open_range("jobs/job_1/a.bin", 10, 19).read() == source.read_bytes()[10:20]


def test_a_large_file_goes_up_in_parts(endpoint, store, tmp_path):
    parts = S3Store(store.url, endpoint_url=endpoint.url, patience_s=20, multipart_bytes=5 * 1024**2)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(11 * 1024**2))
    sha = parts.put_file("jobs/job_2/big.bin", source)
    answer = endpoint.client().head_object(Bucket=endpoint.bucket, Key=f"{store.url.prefix}/jobs/job_2/big.bin")
    assert answer["ETag"].strip('"').endswith("-3")  # three parts
    assert parts.get_file("jobs/job_2/big.bin", tmp_path / "back.bin", sha)


def test_a_prefix_is_deleted_whole_and_a_presigned_url_serves_one_object(store, tmp_path):
    source = tmp_path / "f"
    source.write_bytes(b"hello")
    for name in ("jobs/job_3/a", "jobs/job_3/tensorboard/b", "jobs/job_30/c"):
        store.put_file(name, source)
    url = store.presign("jobs/job_3/a", "a", 60)
    assert httpx.get(url).content == b"hello"
    store.delete_prefix("jobs/job_3")
    assert [item["name"] for item in store.list("jobs")] == ["job_30/c"]


def test_an_unreachable_store_is_named_and_no_secret_is_shown(tmp_path, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    from tests.fixtures.servers import free_port

    dead = S3Store(parse_storage_url("s3://gone/p"), endpoint_url=f"http://127.0.0.1:{free_port()}", patience_s=1)
    with pytest.raises(StoreUnavailable) as caught:
        dead.head("jobs/job_1/a")
    message = str(caught.value)
    assert "object store s3://gone/p" in message and "unreachable" in message
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in message and CREDENTIALS["AWS_ACCESS_KEY_ID"] not in message


def _dataset(folder: Path, n: int = 3) -> Path:
    (folder / "images" / "cat").mkdir(parents=True)
    for i in range(n):
        (folder / "images" / "cat" / f"{i}.png").write_bytes(os.urandom(500))
    return folder


def test_packing_is_deterministic(tmp_path):
    folder = _dataset(tmp_path / "d")
    assert pack(folder, tmp_path / "a.tar") == pack(folder, tmp_path / "b.tar")


def test_a_dataset_is_fetched_once_then_read_without_network(endpoint, store, tmp_path):
    api = remote_storage(tmp_path / "api", store)
    checked = _dataset(tmp_path / "checked")
    files = sorted(p.relative_to(checked) for p in checked.rglob("*.png"))
    sha = api.add_dataset("ds_0001", checked)
    assert sorted(p.relative_to(api.dataset_dir("ds_0001")) for p in api.dataset_dir("ds_0001").rglob("*.png")) == files

    worker = remote_storage(tmp_path / "worker", store)
    folder = worker.dataset_folder("ds_0001", sha)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*.png")) == files
    endpoint.stop()  # the second use on this machine needs no store
    try:
        assert worker.dataset_folder("ds_0001", sha) == folder
    finally:
        endpoint.start()
    with pytest.raises(StoreUnavailable, match="does not match"):  # a record that disagrees with the bytes
        remote_storage(tmp_path / "other", store).dataset_folder("ds_0001", "1" * 64)


def test_the_cache_evicts_the_least_recently_used(tmp_path):
    cache = DatasetCache(tmp_path / "cache", limit_bytes=3500)  # three of them fit
    shas = []
    for i in range(3):
        tree = _dataset(tmp_path / f"t{i}", n=2)  # 1000 bytes each
        shas.append(f"{i:064x}")
        cache.adopt_tree(shas[-1], tree)
        os.utime(cache.entry(shas[-1]) / ".bytes", (1000 + i, 1000 + i))
    cache.get(shas[0])  # used again: now the newest
    tree = _dataset(tmp_path / "t3", n=2)
    cache.adopt_tree("f" * 64, tree)
    assert cache.get(shas[1]) is None
    assert all(cache.get(sha) is not None for sha in (shas[0], shas[2], "f" * 64))


def test_deleting_a_dataset_or_job_deletes_its_objects(store, tmp_path):
    storage = remote_storage(tmp_path, store)
    storage.add_dataset("ds_0002", _dataset(tmp_path / "checked"))
    storage.remove_dataset("ds_0002", lambda: None)
    assert store.list("datasets/ds_0002") == [] and not storage.dataset_dir("ds_0002").exists()
    storage.write_file("job_9", "encoder.json", b"{}")
    storage.delete_job("job_9")
    assert store.list("jobs/job_9") == []


def test_checkpoints_upload_in_the_background_and_the_newest_is_resumed_elsewhere(store, tmp_path):
    here = remote_storage(tmp_path / "one", store)
    run_dir = here.run_dir("job_4")
    (run_dir / "checkpoints").mkdir(parents=True)
    uploader = CheckpointUploader(here, "job_4", run_dir)
    for step in range(5):
        (run_dir / "metrics.jsonl").write_text(f'{{"step": {step}}}\n')
        temp = run_dir / "checkpoints" / ".last.tmp"
        temp.write_bytes(f"weights at {step}".encode())
        os.replace(temp, run_dir / "checkpoints" / "last.pt")  # as the engine does
        uploader.submit(run_dir / "checkpoints" / "last.pt")
    uploader.close(finish=True)
    assert 1 <= uploader.uploaded <= 5
    assert not list((run_dir / "checkpoints" / ".uploading").iterdir())

    there = remote_storage(tmp_path / "two", store)
    target = there.run_dir("job_4")
    assert there.fetch_checkpoint("job_4", target / "checkpoints" / "last.pt", target / "metrics.jsonl")
    assert (target / "checkpoints" / "last.pt").read_bytes() == b"weights at 4"
    assert (target / "metrics.jsonl").read_text() == '{"step": 4}\n'
    assert not there.fetch_checkpoint("job_5", target / "x.pt", target / "m")


def test_an_unreachable_store_stops_a_delete_before_the_record_goes(tmp_path, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    from tests.fixtures.servers import free_port

    dead = S3Store(parse_storage_url("s3://gone/p"), endpoint_url=f"http://127.0.0.1:{free_port()}", patience_s=1)
    forgotten = []
    with pytest.raises(StoreUnavailable):
        remote_storage(tmp_path, dead).remove_dataset("ds_0003", lambda: forgotten.append(True))
    assert forgotten == []


def test_a_missing_bucket_is_named_at_once_not_retried(endpoint, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    store = S3Store(parse_storage_url("s3://no-such-bucket/p"), endpoint_url=endpoint.url, patience_s=60)
    with pytest.raises(StoreUnavailable, match="NoSuchBucket") as caught:
        store.ping()
    assert "object store s3://no-such-bucket/p" in str(caught.value)
