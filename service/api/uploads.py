"""Receiving a dataset upload: streamed to disk with a byte counter and a size cap.

Starlette's form parser spools a whole file before the route runs and its part limits do
not cover files, so uploads are parsed here, chunk by chunk as they arrive: past
`max_bytes` the upload stops with 413 and its partial file is removed. Two request forms:
`multipart/form-data` with a `file` part (and an optional `name` field), or the raw file as
the body with `?filename=NAME` (for `curl --data-binary @x.zip`).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import anyio
from fastapi import HTTPException, Request
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

ALLOWED_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".npz")
MAX_FIELD_BYTES = 64 * 1024
MULTIPART_OVERHEAD = 64 * 1024
DRAIN_LIMIT = 16 * 1024 * 1024
"""After refusing an upload, read at most this much more of it so the client gets the answer."""


@dataclass
class ReceivedFile:
    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


def check_filename(filename: str) -> str:
    name = os.path.basename(filename.replace("\\", "/")).strip()
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise HTTPException(422, "the file name contains control characters (a NUL byte?); rename the file")
    if not name.lower().endswith(ALLOWED_SUFFIXES):
        raise HTTPException(
            415,
            f"unsupported file {name!r}: upload a .zip, .tar, .tar.gz or .tgz of an image folder, "
            "or an .npz with x (N,H,W,C uint8) and optional y",
        )
    return name


def too_large(max_bytes: int, fix: str = "the limit (DCL_MAX_UPLOAD_BYTES); split or shrink the dataset") -> HTTPException:
    return HTTPException(413, f"upload larger than {max_bytes} bytes, {fix}")


def check_plain_name(filename: str) -> str:
    """Any file name without control characters (the content decides what it is)."""
    name = os.path.basename(filename.replace("\\", "/")).strip()
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise HTTPException(422, "the file name contains control characters (a NUL byte?); rename the file")
    return name or "upload"


class _PartState:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.header_field = b""
        self.header_value = b""
        self.name: str | None = None
        self.filename: str | None = None
        self.value = bytearray()


async def receive_upload(request: Request, dest_dir: Path, max_bytes: int, *,
                         check_name=check_filename, too_large_fix: str | None = None) -> ReceivedFile:
    """Streams the request's file to a new file under `dest_dir`. The caller removes it.
    `check_name` vets the file's name; `too_large_fix` replaces the 413's advice."""
    refuse = (lambda n: too_large(n, too_large_fix)) if too_large_fix else too_large
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        await _drain(request.stream(), DRAIN_LIMIT)
        raise refuse(max_bytes)
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"upload-{secrets.token_hex(8)}"
    stream = request.stream()
    try:
        if content_type == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise HTTPException(400, "multipart/form-data body without a boundary")
            return await _receive_multipart(stream, path, boundary, max_bytes, check_name, refuse)
        filename = request.query_params.get("filename")
        if not filename:
            raise HTTPException(
                422, "send the file as multipart/form-data (field `file`), or as the raw body with ?filename=NAME"
            )
        filename = check_name(filename)
        size = 0
        async with await anyio.open_file(path, "wb") as out:
            async for chunk in stream:
                size += len(chunk)
                if size > max_bytes:
                    await _drain(stream, DRAIN_LIMIT)
                    raise refuse(max_bytes)
                await out.write(chunk)
        if size == 0:
            raise HTTPException(422, "the upload is empty")
        return ReceivedFile(path, filename, size)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


async def _receive_multipart(
    stream: AsyncIterator[bytes], path: Path, boundary: bytes, max_bytes: int, check_name=check_filename,
    refuse=too_large,
) -> ReceivedFile:
    fields: dict[str, str] = {}
    state = {"part": _PartState(), "file_done": False, "filename": None, "writing": False}
    pending: list[bytes] = []
    size = 0

    def on_part_begin() -> None:
        state["part"] = _PartState()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["part"].header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["part"].header_value += data[start:end]

    def on_header_end() -> None:
        part = state["part"]
        part.headers[part.header_field.strip().lower()] = part.header_value.strip()
        part.header_field, part.header_value = b"", b""

    def on_headers_finished() -> None:
        part = state["part"]
        _, disposition = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if "\x00" in part.name:
            raise HTTPException(422, "a multipart field name contains a NUL byte")
        filename = disposition.get(b"filename")
        if filename is not None:
            if state["file_done"]:
                raise HTTPException(422, "upload one file per request")
            part.filename = check_name(filename.decode("utf-8", "replace"))
            state["filename"] = part.filename
            state["writing"] = True

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal size
        part = state["part"]
        if state["writing"]:
            size += end - start
            if size > max_bytes:
                raise refuse(max_bytes)
            pending.append(data[start:end])
        else:
            part.value += data[start:end]
            if len(part.value) > MAX_FIELD_BYTES:
                raise HTTPException(413, f"form field {part.name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end() -> None:
        part = state["part"]
        if state["writing"]:
            state["writing"], state["file_done"] = False, True
        elif part.name:
            value = part.value.decode("utf-8", "replace")
            if "\x00" in value:
                raise HTTPException(422, f"form field {part.name!r} contains a NUL byte")
            fields[part.name] = value

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    })
    async with await anyio.open_file(path, "wb") as out:
        async for chunk in stream:
            try:
                parser.write(chunk)
            except HTTPException as exc:
                if exc.status_code == 413:
                    await _drain(stream, DRAIN_LIMIT)
                raise
            except Exception as exc:  # python-multipart's parse errors
                raise HTTPException(400, f"malformed multipart body: {exc}") from None
            if pending:
                await out.write(b"".join(pending))
                pending.clear()
        try:
            parser.finalize()
        except Exception as exc:
            raise HTTPException(400, f"malformed multipart body: {exc}") from None
    if not state["file_done"]:
        raise HTTPException(422, "no file in the upload: send it as the multipart field `file`")
    if size == 0:
        raise HTTPException(422, "the uploaded file is empty")
    return ReceivedFile(path, state["filename"], size, fields)


async def _drain(stream: AsyncIterator[bytes], limit: int) -> None:
    """Read (and drop) the rest of a refused body, up to `limit` bytes, so the client is
    still listening when the error answer comes; a larger rest is cut off."""
    read = 0
    try:
        async for chunk in stream:
            read += len(chunk)
            if read > limit:
                break
    except Exception:
        pass
