"""An S3-compatible bucket (AWS, MinIO, anything that speaks the protocol), through boto3.

Keys are made by `storage.py` from ids the service generated and file names the engine chose,
never from user text; `key()` refuses anything else. Credentials and the region come from the
standard AWS variables and files (boto3's own chain): they are never read, logged or shown here.

Every call retries with back-off for `patience_s` while the store is unreachable or answers 5xx
(a worker waits minutes, the API a few seconds), then raises `StoreUnavailable`, whose message
names the store and never a credential.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dcl_core.files import sha256_file

log = logging.getLogger(__name__)

MiB = 1024**2
SHA_META = "sha256"
"""The object metadata entry holding the object's sha256 (hex), written with every upload."""
_KEY_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class StoreUnavailable(RuntimeError):
    """The object store did not answer (or answered 5xx) for longer than the caller waits."""


@dataclass(frozen=True)
class StorageURL:
    scheme: str  # "file" or "s3"
    bucket: str = ""
    prefix: str = ""
    path: str = ""

    @property
    def remote(self) -> bool:
        return self.scheme == "s3"


def parse_storage_url(url: str) -> StorageURL:
    """`file:///path` or `s3://BUCKET[/PREFIX]`; ValueError naming DCL_STORAGE_URL otherwise."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return StorageURL("file", path=parts.path)
    if parts.scheme == "s3":
        prefix = parts.path.strip("/")
        if not parts.netloc or parts.query or parts.fragment or ".." in prefix.split("/"):
            raise ValueError(f"DCL_STORAGE_URL {url!r}: write s3://BUCKET or s3://BUCKET/PREFIX")
        return StorageURL("s3", bucket=parts.netloc, prefix=prefix)
    raise ValueError(f"DCL_STORAGE_URL {url!r}: use file:///PATH (the default) or s3://BUCKET/PREFIX")


def key(*parts: str) -> str:
    """A key from service-made parts (ids, engine file names): ValueError for anything else, so a
    name holding `../`, `%2f` or NUL can never reach the bucket."""
    for part in parts:
        for piece in part.split("/"):
            if not _KEY_PART.fullmatch(piece):
                raise ValueError(f"{part!r} is not a storage key part (ids and service-made file names only)")
    return "/".join(parts)


_REFUSALS = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "ExpiredToken")


def _refusal(exc: BaseException) -> str | None:
    """The reason when the store answers but will not serve this set-up (no retry helps)."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return "no credentials found"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return code if code in _REFUSALS else None
    return None


def _transient(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or exc.response.get("Error", {}).get("Code") in ("SlowDown", "RequestTimeout")
    return isinstance(exc, (BotoCoreError, ConnectionError, TimeoutError))


class S3Store:
    def __init__(self, url: StorageURL, *, endpoint_url: str | None = None, patience_s: float = 300.0,
                 multipart_bytes: int = 64 * MiB):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.url, self.endpoint_url, self.patience_s = url, endpoint_url, patience_s
        config = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"},
                        s3={"addressing_style": "path"} if endpoint_url else None)
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)
        self.transfer = TransferConfig(multipart_threshold=multipart_bytes, multipart_chunksize=multipart_bytes,
                                       max_concurrency=4)

    def __str__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"object store s3://{self.url.bucket}{'/' + self.url.prefix if self.url.prefix else ''}{where}"

    def _full(self, name: str) -> str:
        return f"{self.url.prefix}/{name}" if self.url.prefix else name

    def _call(self, what: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), retried with back-off (0.5 s doubling to 15 s) for patience_s."""
        deadline, wait = time.monotonic() + self.patience_s, 0.5
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                refused = _refusal(exc)
                if refused:
                    raise StoreUnavailable(f"the {self} refused to {what} ({refused}); check the bucket name "
                                           "and the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or an "
                                           "AWS profile)") from None
                if not _transient(exc):
                    raise
                if time.monotonic() + wait > deadline:
                    raise StoreUnavailable(f"the {self} is unreachable ({what}: {type(exc).__name__}); "
                                           "check that it is running and reachable, then try again") from None
                log.warning("%s: %s failed (%s); retrying in %.1f s", self, what, type(exc).__name__, wait)
                time.sleep(wait)
                wait = min(wait * 2, 15.0)

    # ---- objects ---------------------------------------------------------------------------

    def put_file(self, name: str, path: Path, sha256: str | None = None) -> str:
        """Upload `path` as `name` (multipart above the threshold: completed or aborted, never a
        partial object under the name), with its sha256 in the metadata; returns the sha256."""
        sha256 = sha256 or sha256_file(path)
        self._call(f"upload {name}", self.client.upload_file, str(path), self.url.bucket, self._full(name),
                   ExtraArgs={"Metadata": {SHA_META: sha256}}, Config=self.transfer)
        return sha256

    def head(self, name: str) -> dict | None:
        """{size, sha256, etag} of an object, None when there is none."""
        from botocore.exceptions import ClientError

        try:
            meta = self._call(f"look up {name}", self.client.head_object, Bucket=self.url.bucket, Key=self._full(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return {"size": int(meta["ContentLength"]), "sha256": meta.get("Metadata", {}).get(SHA_META)}

    def get_file(self, name: str, dest: Path, sha256: str | None = None) -> bool:
        """Download `name` into `dest` (written aside, renamed when whole, checked against
        `sha256` or the object's own); False when there is no such object."""
        info = self.head(name)
        if info is None:
            return False
        expected = sha256 or info["sha256"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            self._call(f"download {name}", self.client.download_file, self.url.bucket, self._full(name), str(part),
                       Config=self.transfer)
            if expected and sha256_file(part) != expected:
                raise StoreUnavailable(f"{name} in the {self} does not match its sha256 {expected[:12]}…; "
                                       "it was changed or damaged in the store")
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)
        return True

    def open_range(self, name: str, start: int | None = None, end: int | None = None):
        """A streaming body of bytes start..end (inclusive) of `name`, or all of it."""
        extra = {"Range": f"bytes={start}-{end}"} if start is not None else {}
        answer = self._call(f"read {name}", self.client.get_object, Bucket=self.url.bucket, Key=self._full(name),
                            **extra)
        return answer["Body"]

    def list(self, prefix: str) -> list[dict]:
        """[{name, size}] of the objects under `prefix` (names relative to it)."""
        full = self._full(prefix).rstrip("/") + "/"
        pages = self._call(f"list {prefix}", lambda: list(
            self.client.get_paginator("list_objects_v2").paginate(Bucket=self.url.bucket, Prefix=full)))
        return [{"name": item["Key"][len(full):], "size": int(item["Size"])}
                for page in pages for item in page.get("Contents", [])]

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under `prefix`; unfinished multipart uploads there are aborted too."""
        names = [self._full(prefix.rstrip("/") + "/" + item["name"]) for item in self.list(prefix)]
        for start in range(0, len(names), 1000):
            chunk = [{"Key": k} for k in names[start:start + 1000]]
            self._call(f"delete {prefix}", self.client.delete_objects, Bucket=self.url.bucket,
                       Delete={"Objects": chunk, "Quiet": True})

    def ping(self) -> None:
        """One cheap request: StoreUnavailable (after patience_s) when the store does not answer."""
        self._call("reach the bucket", self.client.list_objects_v2, Bucket=self.url.bucket, MaxKeys=1,
                   Prefix=self._full(""))

    def delete(self, name: str) -> None:
        self._call(f"delete {name}", self.client.delete_object, Bucket=self.url.bucket, Key=self._full(name))

    def presign(self, name: str, filename: str, expires_s: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", ExpiresIn=int(expires_s),
            Params={"Bucket": self.url.bucket, "Key": self._full(name),
                    "ResponseContentDisposition": f'attachment; filename="{filename.rsplit("/", 1)[-1]}"'})

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (tests, a fresh MinIO)."""
        from botocore.exceptions import ClientError

        try:
            self._call("look up the bucket", self.client.head_bucket, Bucket=self.url.bucket)
        except ClientError:
            self._call("create the bucket", self.client.create_bucket, Bucket=self.url.bucket)
