"""`dcl storage migrate --to s3://...`: copy a file store (today's shared folder) into a bucket, so
a `make run` user can grow into workers on other machines.

What is copied is what the job store records: every dataset (packed, its sha256 then recorded:
the cache key the workers need), every job's artifacts (each checked against its recorded sha256
first: a file that does not match is reported, never uploaded) and the newest checkpoint of every
job that has one. Resumable: an object already in the bucket with the same sha256 is skipped, so a
run that was interrupted is simply started again. The file store itself is left as it was.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from dcl_core.files import sha256_file
from dcl_core.training.paths import CHECKPOINT, METRICS
from service.control.dataset_cache import pack
from service.control.datasets import DatasetRepo
from service.control.db import Database
from service.control.objectstore import S3Store, key, parse_storage_url
from service.control.storage import CHECKPOINT_OBJECTS, DATASET_OBJECT, LocalStorage
from service.control.tables import artifacts


@dataclass
class Migration:
    copied: int = 0
    skipped: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


def migrate(settings, to_url: str, *, endpoint_url: str | None = None, say=print) -> Migration:
    url = parse_storage_url(to_url)
    if not url.remote:
        raise ValueError(f"--to {to_url!r}: name a bucket, s3://BUCKET/PREFIX")
    store = S3Store(url, endpoint_url=endpoint_url, patience_s=settings.store_retry_seconds)
    local = LocalStorage(Path(settings.artifacts_dir), Path(settings.datasets_dir))
    db = Database(settings.database_url)
    report = Migration()
    try:
        _datasets(db, local, store, report, say)
        _artifacts(db, local, store, report, say)
        _checkpoints(local, store, report, say)
    finally:
        db.dispose()
    return report


def _put(store: S3Store, name: str, path: Path, sha256: str, report: Migration, say) -> None:
    found = store.head(name)
    if found is not None and found["sha256"] == sha256 and found["size"] == path.stat().st_size:
        report.skipped += 1
        return
    store.put_file(name, path, sha256)
    report.copied += 1
    report.bytes += path.stat().st_size
    say(f"copied {name} ({path.stat().st_size} bytes)")


def _datasets(db: Database, local: LocalStorage, store: S3Store, report: Migration, say) -> None:
    repo = DatasetRepo(db)
    offset = 0
    while True:
        page, _ = repo.list(None, limit=500, offset=offset)
        if not page:
            return
        offset += len(page)
        for dataset in page:
            folder = local.dataset_dir(dataset.id)
            if not folder.is_dir():
                report.problems.append(f"dataset {dataset.id}: its folder {folder} is missing; not copied")
                continue
            with tempfile.TemporaryDirectory(prefix="dcl-migrate-") as work:
                packed = Path(work) / DATASET_OBJECT
                sha256 = pack(folder, packed)
                _put(store, key("datasets", dataset.id, DATASET_OBJECT), packed, sha256, report, say)
            if dataset.sha256 != sha256:
                repo.set_sha256(dataset.id, sha256)


def _artifacts(db: Database, local: LocalStorage, store: S3Store, report: Migration, say) -> None:
    with db.engine.connect() as conn:
        rows = conn.execute(select(artifacts.c.job_id, artifacts.c.name, artifacts.c.size, artifacts.c.sha256)
                            .order_by(artifacts.c.job_id, artifacts.c.name)).all()
    for job_id, name, size, sha256 in rows:
        path = local.artifact_path(job_id, name)
        if path is None or not path.is_file():
            report.problems.append(f"job {job_id}: artifact {name} is missing from {local.run_dir(job_id)}")
            continue
        if path.stat().st_size != size or sha256_file(path) != sha256:
            report.problems.append(f"job {job_id}: artifact {name} does not match its recorded sha256; not copied")
            continue
        _put(store, local.object_name(job_id, name), path, sha256, report, say)


def _checkpoints(local: LocalStorage, store: S3Store, report: Migration, say) -> None:
    if not local.artifacts_dir.is_dir():
        return
    for run_dir in sorted(local.artifacts_dir.iterdir()):
        checkpoint = run_dir / CHECKPOINT
        if not checkpoint.is_file():
            continue
        for path, name in ((run_dir / METRICS, "metrics.jsonl"), (checkpoint, "last.pt")):  # the log first
            if path.is_file():
                _put(store, key("jobs", run_dir.name, CHECKPOINT_OBJECTS, name), path, sha256_file(path), report, say)
