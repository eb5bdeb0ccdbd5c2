"""`Client`: every resource of the API as a method: jobs (and sweeps), datasets, metrics, events,
artifacts, the model registry and webhooks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dcl_core.errors import UserError
from service.client.core import Transport
from service.client.records import Alias, Artifact, Dataset, Delivery, Job, Model, ModelVersion, Page, Webhook


def _params(**values) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class Client(Transport):
    """A client of one dcl-service: `Client("http://127.0.0.1:8000", key)` (or DCL_URL and DCL_API_KEY).
    Errors are `ApiError` (a `UserError`) carrying the service's message, which names the field and
    the fix. Use it as a context manager, or call `close()`."""

    # ---- jobs ------------------------------------------------------------------------------

    def submit(self, body: dict) -> Job:
        """Any job: `{"type": "pretrain", "config": {...}}`, a probe, an embed, a sweep."""
        return Job.of(self._json("POST", "/v1/jobs", json=body))

    def pretrain(self, config: dict | None = None, **fields) -> Job:
        """Train an encoder; `config` is a TrainConfig (dcl_core/config.py); `fields` any other
        top-level field of the job (resources, name, tags...)."""
        return self.submit({"type": "pretrain", "config": config or {}, **fields})

    def linear_probe(self, encoder: str, train: Any, test: Any, **fields) -> Job:
        """Score an encoder: `encoder` a pretrain job id or a model, `model:NAME@ALIAS`."""
        return self.submit({"type": "linear_probe", "encoder_job": encoder, "train": train, "test": test, **fields})

    def embed(self, encoder: str, data: Any, **fields) -> Job:
        return self.submit({"type": "embed", "encoder_job": encoder, "data": data, **fields})

    def sweep(self, config: dict, grid: dict[str, list], evaluate: dict | None = None, **fields) -> Job:
        """One pretrain job per grid point, scored with `evaluate`; its members: `members(id)`."""
        return self.submit({"type": "sweep", "config": config, "grid": grid, **_params(evaluate=evaluate), **fields})

    def job(self, job_id: str) -> Job:
        return Job.of(self._json("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, status: str | None = None, type: str | None = None, limit: int = 50, offset: int = 0,
             parent: str | None = None, **filters) -> Page[Job]:
        """A page of your jobs, newest first (`filters`: any other query parameter the server takes)."""
        params = _params(status=status, type=type, limit=limit, offset=offset, parent=parent, **filters)
        return Page.of_items(self._json("GET", "/v1/jobs", params=params), Job)

    def iter_jobs(self, **filters) -> Iterator[Job]:
        """Every job matching `filters` (those of `jobs()`), a page at a time."""
        offset = 0
        while True:
            page = self.jobs(limit=200, offset=offset, **filters)
            yield from page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return

    def update_job(self, job_id: str, **changes) -> Job:
        """Change a job's `name`, `notes` (None clears them), `tags` (replaces them), `add_tags`, `remove_tags`."""
        return Job.of(self._json("PATCH", f"/v1/jobs/{job_id}", json=changes))

    def members(self, sweep_id: str) -> list[Job]:
        """A sweep's member jobs, oldest first."""
        return sorted(self.iter_jobs(parent=sweep_id), key=lambda j: j["created_at"])

    def cancel(self, job_id: str) -> Job:
        return Job.of(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def retry(self, job_id: str) -> Job:
        return Job.of(self._json("POST", f"/v1/jobs/{job_id}/retry"))

    def delete(self, job_id: str) -> None:
        """A finished job with its files (refused while a model version points at it)."""
        self._json("DELETE", f"/v1/jobs/{job_id}")

    def wait(self, job_id: str, *, progress: bool | Callable[[Job], None] = False,
             timeout_s: float | None = None) -> Job:
        """Follow the job until it ends and return it (check `.status`). `progress=True` draws a
        progress bar on stderr; a function is called with the job at each change instead."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        bar = None
        try:
            for event in self.events(job_id):
                if isinstance(event.data, Job):
                    if callable(progress):
                        progress(event.data)
                    elif progress:
                        bar = _advance(bar, event.data)
                    if event.event == "end":
                        return event.data
                elif event.event == "end":  # the job was deleted underneath
                    raise UserError(f"job {job_id}: {event.data}")
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} did not end within {timeout_s} s")
        finally:
            if bar is not None:
                bar.close()
        raise UserError(f"the event stream of {job_id} ended early")

    def metrics(self, job_id: str, since: int = 0, limit: int = 1000) -> dict:
        """A page of the metrics series: `items` (rows by step), `next_since`."""
        return self._json("GET", f"/v1/jobs/{job_id}/metrics", params={"since": since, "limit": limit})

    def iter_metrics(self, job_id: str, since: int = 0) -> Iterator[dict]:
        """Every metrics row after step `since` ({step, loss, lr, epoch, ...}), page by page."""
        while True:
            page = self.metrics(job_id, since=since)
            yield from page["items"]
            if not page["items"] or page["next_since"] == since:
                return
            since = page["next_since"]

    def neighbours(self, job_id: str, item: int, k: int = 10) -> dict:
        """An embed job's k images nearest to its item `item`: {item, label, items: [{item, score, label}]}."""
        return self._json("GET", f"/v1/jobs/{job_id}/neighbours", params={"item": item, "k": k})

    def search(self, job_id: str, image: str | Path, k: int = 10) -> dict:
        """The embed job's k images nearest to an image file (embedded on the server: seconds)."""
        image = Path(image)
        with open(image, "rb") as f:
            return self._json("POST", f"/v1/jobs/{job_id}/search", params={"k": k},
                              files={"file": (image.name, f, "application/octet-stream")}, timeout=120)

    def artifacts(self, job_id: str) -> list[Artifact]:
        return [Artifact.of(a) for a in self._json("GET", f"/v1/jobs/{job_id}/artifacts")["items"]]

    def download_all(self, job_id: str, out_dir: str | Path, names: list[str] | None = None) -> list[Path]:
        """The job's artifacts (or those `names`) into `out_dir`, each checked against its sha256."""
        listed = [a for a in self.artifacts(job_id) if names is None or a["name"] in names]
        return [self.download(job_id, artifact, Path(out_dir)) for artifact in listed]

    # ---- datasets ----------------------------------------------------------------------------

    def upload(self, path: str | Path, name: str | None = None) -> Dataset:
        """A .zip/.tar(.gz) of images (class sub-folders give labels) or an .npz."""
        path = Path(path)
        with open(path, "rb") as f:
            files = {"file": (path.name, f, "application/octet-stream")}
            data = {"name": name} if name else None
            return Dataset.of(self._json("POST", "/v1/datasets", files=files, data=data, timeout=None))

    def datasets(self, limit: int = 100, offset: int = 0) -> Page[Dataset]:
        return Page.of_items(self._json("GET", "/v1/datasets", params={"limit": limit, "offset": offset}), Dataset)

    def dataset(self, dataset_id: str) -> Dataset:
        return Dataset.of(self._json("GET", f"/v1/datasets/{dataset_id}"))

    def delete_dataset(self, dataset_id: str) -> None:
        self._json("DELETE", f"/v1/datasets/{dataset_id}")

    # ---- the model registry ------------------------------------------------------------------

    def register(self, name: str, job: str) -> ModelVersion:
        """A succeeded pretrain job's encoder as the next version of model `name`."""
        return ModelVersion.of(self._json("POST", "/v1/models", json={"name": name, "job": job}))

    def models(self, limit: int = 50, offset: int = 0) -> Page[Model]:
        return Page.of_items(self._json("GET", "/v1/models", params={"limit": limit, "offset": offset}), Model)

    def model(self, name: str) -> Model:
        """The model with its aliases and every version, newest first."""
        return Model.of(self._json("GET", f"/v1/models/{_part(name)}"))

    def model_version(self, ref: str) -> ModelVersion:
        """`NAME@ALIAS` or `NAME/VERSION` (a `model:` in front is fine): the version it names now."""
        return ModelVersion.of(self._json("GET", _version_path(ref)))

    def set_alias(self, name: str, alias: str, version: int) -> Alias:
        """Point `alias` at `version` (made, or moved)."""
        return Alias.of(self._json("PUT", f"/v1/models/{_part(name)}/aliases/{_part(alias)}",
                                   json={"version": version}))

    def delete_alias(self, name: str, alias: str) -> None:
        self._json("DELETE", f"/v1/models/{_part(name)}/aliases/{_part(alias)}")

    def delete_model_version(self, name: str, version: int) -> None:
        self._json("DELETE", f"/v1/models/{_part(name)}/versions/{int(version)}")

    def delete_model(self, name: str) -> None:
        self._json("DELETE", f"/v1/models/{_part(name)}")

    def model_files(self, ref: str) -> list[Artifact]:
        return [Artifact.of(a) for a in self._json("GET", _version_path(ref) + "/files")["items"]]

    def download_model(self, ref: str, out_dir: str | Path) -> ModelVersion:
        """Every file of the version `ref` names (an alias is resolved once, so the files are all
        of one version) into `out_dir`, each checked against its sha256. `dcl_core.export.load_encoder(out_dir)`
        loads the encoder."""
        version = self.model_version(ref)
        for artifact in self.model_files(f"{version['name']}/{version['version']}"):
            self.download(version["job"], artifact, Path(out_dir))
        return version

    # ---- webhooks ----------------------------------------------------------------------------

    def create_webhook(self, url: str, events: list[str] | None = None) -> Webhook:
        """A webhook for your jobs' ends; the answer's `secret` (shown once) signs each delivery:
        check it with `verify_signature(secret, header, body)`."""
        return Webhook.of(self._json("POST", "/v1/webhooks", json={"url": url, **_params(events=events)}))

    def webhooks(self) -> list[Webhook]:
        return [Webhook.of(h) for h in self._json("GET", "/v1/webhooks")["items"]]

    def webhook(self, webhook_id: str) -> Webhook:
        return Webhook.of(self._json("GET", f"/v1/webhooks/{webhook_id}"))

    def delete_webhook(self, webhook_id: str) -> None:
        self._json("DELETE", f"/v1/webhooks/{webhook_id}")

    def deliveries(self, webhook_id: str, limit: int = 50, offset: int = 0) -> Page[Delivery]:
        """Its deliveries, newest first, each with every attempt."""
        return Page.of_items(self._json("GET", f"/v1/webhooks/{webhook_id}/deliveries",
                                        params={"limit": limit, "offset": offset}), Delivery)


def _part(text: str) -> str:
    return quote(str(text), safe="")


def _version_path(ref: str) -> str:
    ref = ref.removeprefix("model:")
    name, at, alias = ref.partition("@")
    if at:
        return f"/v1/models/{_part(name)}@{_part(alias)}"
    name, slash, number = ref.partition("/")
    if not slash or not number.isdigit():
        raise UserError(f"{ref!r}: name a model version as NAME@ALIAS or NAME/VERSION")
    return f"/v1/models/{_part(name)}/versions/{number}"


def _advance(bar, job: Job):
    """A tqdm bar over the job's steps (a sweep: its members), made on first use."""
    from tqdm import tqdm

    children, progress = job.get("children"), job["progress"]
    total = children["total"] if children else progress.get("total_steps")
    if bar is None and total:
        bar = tqdm(total=total, desc=job["id"], unit="job" if children else "step", dynamic_ncols=True)
    if bar is not None:
        done = (children["succeeded"] + children["failed"] + children["cancelled"]) if children else progress["step"]
        bar.n = min(done, bar.total)
        bar.set_postfix_str(job["status"], refresh=True)
    return bar
