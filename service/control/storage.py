"""Where a job's files and a dataset's images live: the one module that knows.

`LocalStorage` keeps them under two folders (DCL_ARTIFACTS_DIR/JOB_ID and
DCL_DATASETS_DIR/DATASET_ID) that the API and the workers share. Folder names are ids the
service made, never user text.
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
from service.control.models import ArtifactFile

log = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint.pt"
"""A stopped run's resumable state, listed and served like its other files."""
ARTIFACT_FOLDERS = (TENSORBOARD_DIR,)
"""Sub-folders of a run folder whose files are artifacts too, named `FOLDER/FILE`."""
UPLOADS_DIR = ".uploads"
"""Under the datasets folder: files being received and datasets being checked (never registered)."""


class LocalStorage:
    def __init__(self, artifacts_dir: Path, datasets_dir: Path):
        self.artifacts_dir = Path(artifacts_dir)
        self.datasets_dir = Path(datasets_dir)

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
        return self.file_info(job_id, name)

    def file_info(self, job_id: str, name: str) -> ArtifactFile:
        path = self.run_dir(job_id) / name
        return ArtifactFile(name, path.stat().st_size, sha256_file(path))

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
            return [ArtifactFile(CHECKPOINT_ARTIFACT, target.stat().st_size, sha256_file(target))]
        except OSError:  # the job still ends as it should; the checkpoint stays in checkpoints/
            log.warning("could not publish %s as %s", source, CHECKPOINT_ARTIFACT, exc_info=True)
            return []

    def artifact_path(self, job_id: str, name: str) -> Path | None:
        """The file of artifact `name` (a recorded name), or None if it would fall outside the run folder."""
        folder = self.run_dir(job_id).resolve()
        path = (folder / name).resolve()
        return path if folder in path.parents else None

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.run_dir(job_id), ignore_errors=True)

    # ---- datasets ------------------------------------------------------------------------

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets_dir / dataset_id

    def upload_area(self) -> Path:
        """Where uploads are received and checked before they become a dataset."""
        return self.datasets_dir / UPLOADS_DIR

    def add_dataset(self, dataset_id: str, checked: Path) -> None:
        """Put a checked dataset folder (made in `upload_area`) in place, in one rename."""
        os.replace(checked, self.dataset_dir(dataset_id))

    def remove_dataset(self, dataset_id: str, forget) -> None:
        """Delete a dataset's files and then, by `forget()`, its record. The files are renamed
        aside first, in one step: a volume that cannot change keeps both (OSError), and a
        failing `forget` puts them back, so no files outlive their record outside the quota."""
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
