"""Where a job's files and a dataset's images live: the one module that knows.

`LocalStorage` keeps them under two folders (DCL_ARTIFACTS_DIR/JOB_ID and
DCL_DATASETS_DIR/DATASET_ID). With DCL_STORAGE_URL=file://... (the default) that is all: the API
and the workers share those folders. With s3://... (`remote`, an `objectstore.S3Store`) the
folders are this machine's working copies and caches, and the bucket is the truth: a job's files
are uploaded under `jobs/JOB_ID/NAME`, its newest checkpoint under `jobs/JOB_ID/checkpoints/`, a
dataset as one tar under `datasets/DATASET_ID/dataset.tar`, fetched into a `DatasetCache` keyed
by its sha256. Folder names and keys are ids the service made, never user text.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path

from dcl_core.files import link_or_copy_atomic, sha256_file, write_bytes_atomic
from dcl_core.tracking import TENSORBOARD_DIR
from service.control.dataset_cache import DatasetCache, pack
from service.control.models import ArtifactFile
from service.control.objectstore import S3Store, key

log = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint.pt"
"""A stopped run's resumable state, listed and served like its other files."""
ARTIFACT_FOLDERS = (TENSORBOARD_DIR,)
"""Sub-folders of a run folder whose files are artifacts too, named `FOLDER/FILE`."""
UPLOADS_DIR = ".uploads"
"""Under the datasets folder: files being received and datasets being checked (never registered)."""
CHECKPOINT_OBJECTS = "checkpoints"
"""Under a job's keys: the newest uploaded checkpoint (`last.pt`) and its `metrics.jsonl`."""
DATASET_OBJECT = "dataset.tar"


class LocalStorage:
    def __init__(self, artifacts_dir: Path, datasets_dir: Path, *, remote: S3Store | None = None,
                 cache: DatasetCache | None = None):
        self.artifacts_dir = Path(artifacts_dir)
        self.datasets_dir = Path(datasets_dir)
        self.remote = remote
        self.cache = cache

    # ---- a job's files -------------------------------------------------------------------

    def run_dir(self, job_id: str) -> Path:
        """The folder a job's engine writes into (the artifacts are the files it leaves there)."""
        return self.artifacts_dir / job_id

    def job_files(self, job_id: str) -> list[ArtifactFile]:
        """Every file the engine wrote at the top of the run folder and in its ARTIFACT_FOLDERS,
        with size and sha256. Other sub-folders (checkpoints/) and hidden files (half-written
        temporaries) are not artifacts."""
        run_dir = self.run_dir(job_id)
        if not run_dir.is_dir():
            return []
        paths = sorted(run_dir.iterdir())
        for folder in ARTIFACT_FOLDERS:
            if (run_dir / folder).is_dir() and not (run_dir / folder).is_symlink():
                paths += sorted((run_dir / folder).iterdir())
        return [ArtifactFile(path.relative_to(run_dir).as_posix(), path.stat().st_size, sha256_file(path))
                for path in paths if path.is_file() and not path.is_symlink() and not path.name.startswith(".")]

    def write_file(self, job_id: str, name: str, data: bytes) -> ArtifactFile:
        path = self.run_dir(job_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)
        return self.keep_file(job_id, name)

    def keep_file(self, job_id: str, name: str) -> ArtifactFile:
        """A file of the run folder as an artifact: its size and sha256, uploaded when remote."""
        path = self.run_dir(job_id) / name
        info = ArtifactFile(name, path.stat().st_size, sha256_file(path))
        if self.remote is not None:
            self.remote.put_file(self.object_name(job_id, name), path, info.sha256)
        return info

    def save_job_files(self, job_id: str) -> list[ArtifactFile]:
        """`job_files`, each uploaded first when remote (so a recorded file is always in the store)."""
        files = self.job_files(job_id)
        if self.remote is not None:
            for f in files:
                self.remote.put_file(self.object_name(job_id, f.name), self.run_dir(job_id) / f.name, f.sha256)
        return files

    def object_name(self, job_id: str, name: str) -> str:
        """The key of a job's file (ValueError for a name the engine could not have made)."""
        return key("jobs", job_id, name)

    def publish_checkpoint(self, job_id: str) -> list[ArtifactFile]:
        """The run's `checkpoints/last.pt` as the artifact `checkpoint.pt`; [] when it wrote none.

        A hard link: no copy of a checkpoint that may be gigabytes, and the engine only ever
        replaces last.pt by a rename, so the served bytes keep matching their sha256. A copy
        where the file system has no hard links."""
        run_dir = self.run_dir(job_id)
        source = run_dir / "checkpoints" / "last.pt"
        if not source.is_file():
            return []
        target = run_dir / CHECKPOINT_ARTIFACT
        try:
            link_or_copy_atomic(source, target)
        except OSError:  # the job still ends as it should; the checkpoint stays in checkpoints/
            log.warning("could not publish %s as %s", source, CHECKPOINT_ARTIFACT, exc_info=True)
            return []
        return [self.keep_file(job_id, CHECKPOINT_ARTIFACT)]

    def artifact_path(self, job_id: str, name: str, sha256: str | None = None) -> Path | None:
        """The file of artifact `name` (a recorded name), or None if it would fall outside the run
        folder. When remote, a file missing here is fetched from the store first (checked)."""
        folder = self.run_dir(job_id).resolve()
        path = (folder / name).resolve()
        if folder not in path.parents:
            return None
        if self.remote is not None and not path.is_file():
            self.remote.get_file(self.object_name(job_id, name), path, sha256)
        return path

    def fetch_job(self, job_id: str) -> Path:
        """The run folder with every stored file of the job (not its checkpoints) present here:
        what a probe or the API needs of another job's encoder."""
        folder = self.run_dir(job_id)
        if self.remote is not None:
            for item in self.remote.list(key("jobs", job_id)):
                path = folder / item["name"]
                if item["name"].split("/")[0] == CHECKPOINT_OBJECTS or \
                        (path.is_file() and path.stat().st_size == item["size"]):
                    continue
                self.remote.get_file(self.object_name(job_id, item["name"]), path)
        return folder

    def upload_checkpoint(self, job_id: str, checkpoint: Path, metrics: Path | None, sha256: str | None = None) -> None:
        """Put a checkpoint (and the metrics log up to it) in the store, the log first: a resume
        drops log rows past its checkpoint, but cannot make up missing ones."""
        if self.remote is None:
            return
        if metrics is not None and metrics.is_file():
            self.remote.put_file(key("jobs", job_id, CHECKPOINT_OBJECTS, "metrics.jsonl"), metrics)
        self.remote.put_file(key("jobs", job_id, CHECKPOINT_OBJECTS, "last.pt"), checkpoint, sha256)

    def fetch_checkpoint(self, job_id: str, checkpoint: Path, metrics: Path) -> bool:
        """Bring the newest uploaded checkpoint (and its metrics log) into an empty run folder:
        the job was started on another machine. False when there is none or one is here already."""
        if self.remote is None or checkpoint.is_file():
            return False
        if not self.remote.get_file(key("jobs", job_id, CHECKPOINT_OBJECTS, "last.pt"), checkpoint):
            return False
        self.remote.get_file(key("jobs", job_id, CHECKPOINT_OBJECTS, "metrics.jsonl"), metrics)
        return True

    def check_reachable(self) -> None:
        """Before a change that must reach the store (deleting): StoreUnavailable now, not halfway."""
        if self.remote is not None:
            self.remote.ping()

    def delete_job(self, job_id: str) -> None:
        if self.remote is not None:
            self.remote.delete_prefix(key("jobs", job_id))
        shutil.rmtree(self.run_dir(job_id), ignore_errors=True)

    # ---- datasets ------------------------------------------------------------------------

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets_dir / dataset_id

    def upload_area(self) -> Path:
        """Where uploads are received and checked before they become a dataset."""
        return self.datasets_dir / UPLOADS_DIR

    def add_dataset(self, dataset_id: str, checked: Path) -> str | None:
        """Put a checked dataset folder (made in `upload_area`) in place, in one rename. When
        remote, it is packed and uploaded first, then kept in this machine's cache: returns the
        sha256 of the packed form (the cache key to record), else None."""
        if self.remote is None:
            os.replace(checked, self.dataset_dir(dataset_id))
            return None
        packed = self.upload_area() / f"{dataset_id}.tar"
        packed.parent.mkdir(parents=True, exist_ok=True)
        try:
            sha256 = pack(checked, packed)
            self.remote.put_file(key("datasets", dataset_id, DATASET_OBJECT), packed, sha256)
        finally:
            packed.unlink(missing_ok=True)
        self._link_dataset(dataset_id, self.cache.adopt_tree(sha256, checked))
        return sha256

    def dataset_folder(self, dataset_id: str, sha256: str | None) -> Path:
        """The folder of a registered dataset on this machine (when remote: fetched into the cache
        once, checked against `sha256`, then read from there)."""
        if self.remote is None or sha256 is None:
            return self.dataset_dir(dataset_id)
        name = key("datasets", dataset_id, DATASET_OBJECT)

        def fetch(tar_path: Path) -> None:
            if not self.remote.get_file(name, tar_path, sha256):
                raise FileNotFoundError(f"dataset {dataset_id} is missing from the {self.remote}")

        return self._link_dataset(dataset_id, self.cache.fill(sha256, fetch))

    def _link_dataset(self, dataset_id: str, entry: Path) -> Path:
        """DATASETS_DIR/ID as a link to its cache entry (where the engine looks for `dataset:ID`)."""
        link = self.dataset_dir(dataset_id)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not (link.is_symlink() and link.resolve() == entry.resolve()):
            temp = link.with_name(f".{dataset_id}.{os.getpid()}.link")
            temp.unlink(missing_ok=True)
            temp.symlink_to(entry.resolve(), target_is_directory=True)
            os.replace(temp, link)
        return link

    def discard_dataset(self, dataset_id: str) -> None:
        """Remove what an upload that was never registered left, here and in the store."""
        link = self.dataset_dir(dataset_id)
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            shutil.rmtree(link, ignore_errors=True)
        if self.remote is not None:
            self.remote.delete_prefix(key("datasets", dataset_id))

    def remove_dataset(self, dataset_id: str, forget) -> None:
        """Delete a dataset's files and then, by `forget()`, its record. The files are renamed
        aside first, in one step: a volume that cannot change keeps both (OSError), and a
        failing `forget` puts them back, so no files outlive their record outside the quota.
        When remote: the store is asked first (unreachable: nothing changes), then the record
        goes, then the object and this machine's link (other caches age out by themselves)."""
        if self.remote is not None:
            self.check_reachable()
            forget()
            self.discard_dataset(dataset_id)
            return
        folder = self.dataset_dir(dataset_id)
        trash: Path | None = self.upload_area() / f"deleting-{dataset_id}"
        try:
            trash.parent.mkdir(exist_ok=True)
            os.rename(folder, trash)
        except FileNotFoundError:
            trash = None  # its files are gone already
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            trash = folder  # the upload area is on another volume: delete in place
        try:
            forget()
        except BaseException:
            if trash is not None and trash != folder:
                os.rename(trash, folder)
            raise
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)  # what stays is swept by clean_uploads

    def clean_uploads(self, older_than_s: float = 6 * 3600) -> None:
        """Remove what interrupted uploads left (an API killed mid-upload)."""
        uploads = self.upload_area()
        if not uploads.is_dir():
            return
        now = time.time()
        for entry in uploads.iterdir():
            try:
                if now - entry.stat().st_mtime > older_than_s:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            except OSError:
                pass
