"""Serving an object of the object store (DCL_STORAGE_URL=s3://): streamed in 1 MiB reads (memory
stays bounded whatever the size), with Range (one range; several are answered whole, as HTTP
allows), If-Range, and the caller's ETag and Repr-Digest headers."""

from __future__ import annotations

import re

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response

from service.control.objectstore import StoreUnavailable

CHUNK = 1 << 20
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class BadRange(ValueError):
    pass


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte (inclusive) of a one-range header; None for several ranges (served whole).
    BadRange for a malformed header; RangeNotSatisfiable as (size, -1)."""
    header = header.strip()
    if "," in header:
        return None
    match = _RANGE.fullmatch(header.replace(" ", ""))
    if match is None or match.groups() == ("", ""):
        raise BadRange(header)
    first, last = match.groups()
    if first == "":  # the last N bytes
        n = int(last)
        return (max(size - n, 0), size - 1) if n > 0 and size > 0 else (size, -1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        raise BadRange(header)
    return (start, end) if start < size else (size, -1)


class StoredObject(Response):
    def __init__(self, store, name: str, size: int, *, headers: dict, media_type: str):
        super().__init__(headers=headers, media_type=media_type)
        self.store, self.name, self.size = store, name, size

    async def __call__(self, scope, receive, send) -> None:
        request = Headers(scope=scope)
        wanted, if_range = request.get("range"), request.get("if-range")
        span = None
        if wanted is not None and (if_range is None or if_range.strip() == self.headers.get("etag")):
            try:
                span = parse_range(wanted, self.size)
            except BadRange:
                return await JSONResponse({"detail": f"malformed Range header ({wanted}); send "
                                                     "`Range: bytes=START-[END]`"}, status_code=400)(scope, receive, send)
            if span is not None and span[1] < span[0]:
                return await JSONResponse({"detail": f"the Range starts past the end of the file ({self.size} bytes)"},
                                          status_code=416, headers={"Content-Range": f"bytes */{self.size}"}
                                          )(scope, receive, send)
        head = scope["method"] == "HEAD"
        body = None
        if not head and self.size > 0:
            try:
                body = await anyio.to_thread.run_sync(self.store.open_range, self.name, *(span or (None, None)))
            except StoreUnavailable as exc:
                return await JSONResponse({"detail": str(exc)}, status_code=503,
                                          headers={"Retry-After": "30"})(scope, receive, send)
        length = span[1] - span[0] + 1 if span else self.size
        headers = [(k.encode(), v.encode()) for k, v in self.headers.items() if k != "content-length"]
        headers += [(b"content-length", str(length).encode()), (b"accept-ranges", b"bytes")]
        if span:
            headers.append((b"content-range", f"bytes {span[0]}-{span[1]}/{self.size}".encode()))
        await send({"type": "http.response.start", "status": 206 if span else 200, "headers": headers})
        try:
            while body is not None:
                chunk = await anyio.to_thread.run_sync(body.read, CHUNK)
                if not chunk:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            if body is not None:
                body.close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
