"""The service's and the worker's configuration: one place, `DCL_` environment variables.

Paths left unset are derived from `data_dir` (so `DCL_DATA_DIR=/srv/dcl` moves everything),
and the embedded default needs no server at all: a SQLite job store and a SQLite-backed
Celery broker under `data_dir`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.control.objectstore import parse_storage_url

GiB = 1024**3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DCL_", extra="ignore")

    # Where things live.
    data_dir: Path = Field(default=Path("./dcl-data"), description="Root of everything the service stores.")
    database_url: str = Field(default="", description="Job store; default sqlite:///{data_dir}/dcl.db.")
    broker_url: str = Field(default="", description="Celery broker; default sqla+sqlite:///{data_dir}/broker.db.")
    artifacts_dir: Path | None = Field(default=None, description="Default {data_dir}/artifacts (share it between API and workers).")
    datasets_dir: Path | None = Field(default=None, description="Default {data_dir}/datasets (share it between API and workers).")
    torchvision_root: Path | None = Field(default=None, description="Default {data_dir}/torchvision.")
    cache_dir: Path | None = Field(default=None, description="Default {data_dir}/cache.")
    compile_cache_dir: Path | None = Field(
        default=None, description="torch.compile's caches for a worker's jobs (TORCHINDUCTOR_CACHE_DIR: compiled "
        "graphs and kernels), so a job with shapes seen before compiles in seconds. Default {data_dir}/compile-cache.",
    )
    allow_download: bool = Field(default=False, description="Let jobs download torchvision datasets.")
    storage_url: str = Field(
        default="", description="Where datasets, checkpoints and artifacts are kept: file://{data_dir} (the default, "
        "a folder API and workers share) or s3://BUCKET/PREFIX (any S3-compatible store; credentials and region from "
        "the standard AWS variables and files).",
    )
    s3_endpoint_url: str | None = Field(default=None, description="The S3 endpoint (MinIO and others); unset: AWS.")
    presigned_downloads: bool = Field(
        default=False, description="With s3://, answer an artifact download by a 307 to a short-lived presigned URL.")
    presigned_url_seconds: int = Field(default=300, ge=1, le=7 * 86400, description="How long a presigned URL works.")
    store_retry_seconds: float = Field(
        default=300.0, gt=0, description="How long a worker waits and retries while the object store is unreachable.")
    store_api_wait_seconds: float = Field(
        default=5.0, gt=0, description="How long an API request waits for the object store before answering 503.")
    dataset_cache_bytes: int = Field(
        default=20 * GiB, ge=0, description="With s3://, the size of a machine's dataset cache (least recently used "
        "datasets are removed past it).",
    )

    # The API.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated API keys; empty: auth off (loopback only)."
    )
    api_keys_file: Path | None = Field(default=None, description="A file with one API key a line (# comments).")
    operator_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated keys that also see every job and worker on /readyz "
        "and /metrics (other keys see only their own); they work as API keys too.",
    )
    max_upload_bytes: int = Field(default=2 * GiB, ge=1, description="Largest dataset upload, enforced while streaming.")
    max_dataset_files: int = Field(default=200_000, ge=1, description="Most files one uploaded archive may hold.")
    max_extracted_bytes: int = Field(default=8 * GiB, ge=1, description="Most bytes one archive may extract to.")
    max_compression_ratio: float = Field(default=200.0, gt=1, description="Zip-bomb guard: extracted/compressed.")
    max_active_jobs_per_key: int = Field(default=8, ge=1, description="Queued + running jobs one key may have.")
    max_stored_bytes_per_key: int = Field(default=50 * GiB, ge=1, description="Datasets + artifacts one key may store.")
    max_index_bytes: int = Field(
        default=16 * GiB, ge=1, description="Largest embed-job index file the API memory-maps to answer neighbours "
        "and searches (409 above)."
    )
    preview_max_memory_bytes: int = Field(
        default=6 * GiB, ge=256 * 1024 * 1024, description="Address-space limit of an augment preview's subprocess "
        "(torch alone maps ~3 GiB); a preview that needs more is a 422."
    )
    sse_poll_seconds: float = Field(default=0.5, gt=0, description="How often an event stream polls the job store.")
    sse_keepalive_seconds: float = Field(default=15.0, gt=0, description="Comment line sent on an idle event stream.")
    sse_max_stream_seconds: float = Field(
        default=600.0, gt=0, description="An event stream ends after this long; clients reconnect with Last-Event-ID."
    )

    # Jobs and workers.
    gpu_queue: str = "gpu"
    cpu_queue: str = "cpu"
    lease_seconds: float = Field(default=60.0, gt=0, description="A claimed job's lease; renewed by heartbeats.")
    heartbeat_seconds: float = Field(default=10.0, gt=0, description="How often a worker renews its lease.")
    requeue_after_seconds: float = Field(
        default=300.0, gt=0, description="A queued job not started this long after its message is sent again."
    )
    max_job_runtime_s: float | None = Field(default=None, gt=0, description="Server cap on one job's run time.")
    max_model_params: int = Field(
        default=2_000_000_000, ge=1, description="Largest encoder a pretrain job may ask for, as estimated at submit "
        "from its timm encoder_kwargs (embed_dim, depth, mlp_ratio); 422 above."
    )
    worker_seen_seconds: float = Field(default=120.0, gt=0, description="/readyz counts workers seen this recently.")
    jobs_per_gpu: int = Field(
        default=1, ge=1, le=64, description="Jobs one worker runs at once on its GPU, each in its own process."
    )
    gpu_job_min_free_mib: int = Field(
        default=2048, ge=0, description="Free GPU memory a job needs to start; less: it waits in the queue (0: no check)."
    )
    gpu_wait_seconds: float = Field(default=15.0, gt=0, description="A job waiting for GPU memory is tried again after this.")

    # Experiment tracking (read by the workers).
    mlflow_tracking_uri: str | None = Field(
        default=None, description="Log every job to this MLflow tracking server (http://host:5000); unset: off."
    )
    worker_cpu_devices: int = Field(
        default=1, ge=1, le=64,
        description="Test-only: the CPU 'devices' a worker offers to device=cpu jobs (gloo processes, one a device).",
    )
    mlflow_flush_seconds: float = Field(
        default=60.0, ge=0, description="How long a finished job waits for MLflow to take what it has not sent yet."
    )

    # Webhooks (sent by the workers' dispatchers).
    webhook_allow_private: bool = Field(
        default=False, description="Let webhooks target loopback, private and link-local addresses "
        "(a receiver on this machine or network); off, they are refused (server-side request forgery guard).",
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="A delivery attempt's time-out.")
    webhook_retry_seconds: float = Field(default=10.0, gt=0, description="Wait before the first retry; doubles each time.")
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0, description="Longest wait between two attempts.")
    webhook_retry_for_seconds: float = Field(
        default=86400.0, gt=0, description="A delivery is retried until this long after its event, then given up.")
    webhook_poll_seconds: float = Field(default=1.0, gt=0, description="How often a dispatcher looks for due deliveries.")
    webhook_keep_days: float = Field(default=30.0, gt=0, description="Ended deliveries are listed this long.")
    max_webhooks_per_key: int = Field(default=20, ge=1, description="Webhooks one key may have.")

    @field_validator("api_keys", "operator_keys", mode="before")
    @classmethod
    def _split_keys(cls, value):
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _keys_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"API keys file {value} does not exist")
        return value

    @model_validator(mode="after")
    def _derive_paths(self) -> "Settings":
        # Absolute from here on: a subprocess (the augment preview, a job) runs in another folder.
        self.data_dir = data = Path(os.path.abspath(self.data_dir))
        absolute = lambda path: Path(os.path.abspath(path)) if path is not None else None  # noqa: E731
        self.artifacts_dir = absolute(self.artifacts_dir) or data / "artifacts"
        self.datasets_dir = absolute(self.datasets_dir) or data / "datasets"
        self.torchvision_root = absolute(self.torchvision_root) or data / "torchvision"
        self.cache_dir = absolute(self.cache_dir) or data / "cache"
        self.compile_cache_dir = absolute(self.compile_cache_dir) or data / "compile-cache"
        self.database_url = self.database_url or f"sqlite:///{data.resolve()}/dcl.db"
        self.broker_url = self.broker_url or f"sqla+sqlite:///{data.resolve()}/broker.db"
        self.storage_url = self.storage_url or f"file://{data}"
        parse_storage_url(self.storage_url)  # a ValueError names DCL_STORAGE_URL and the two forms
        return self

    @property
    def embedded_broker(self) -> bool:
        """True for the zero set-up default: a SQLite-backed broker that only local processes can use."""
        return self.broker_url.startswith("sqla+sqlite")

    def all_api_keys(self) -> list[str]:
        keys = list(self.api_keys) + list(self.operator_keys)
        if self.api_keys_file is not None:
            for line in self.api_keys_file.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.append(line)
        return keys

    def api_key_hashes(self) -> dict[str, str]:
        """sha256(key) -> owner name. The owner is a short prefix of the hash, never the key itself."""
        return {hash_key(key): "key_" + hash_key(key)[:12] for key in self.all_api_keys()}

    def operator_owners(self) -> set[str]:
        """The owner names of the operator keys."""
        return {"key_" + hash_key(key)[:12] for key in self.operator_keys}

    @property
    def auth_enabled(self) -> bool:
        return bool(self.all_api_keys())

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.artifacts_dir, self.datasets_dir, self.cache_dir):
            Path(path).mkdir(parents=True, exist_ok=True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    return Settings()
