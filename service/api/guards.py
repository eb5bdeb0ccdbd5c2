"""Input no route should ever see: NUL bytes and undecodable bytes in the URL.

PostgreSQL refuses NUL in text (a 500 if one reached it), and no id, name or filter the
service knows can hold one, so such a request is answered 400 before any route runs.
Request bodies are checked where they are parsed (job specs in routes/jobs.py, multipart
names and file names in uploads.py).
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.responses import JSONResponse


def url_problem(scope) -> str | None:
    path = scope.get("path", "")
    if "\x00" in path:
        return "the URL path contains a NUL byte (%00); ids and names never do"
    query = unquote_to_bytes(scope.get("query_string", b"").replace(b"+", b" "))
    if b"\x00" in query:
        return "the query string contains a NUL byte (%00); no parameter takes one"
    try:
        query.decode("utf-8")
    except UnicodeDecodeError:
        return "the query string is not UTF-8 once percent-decoded"
    return None


class RejectOddUrls:
    """ASGI middleware: 400 (the JSON error model) for a URL with a NUL or undecodable bytes."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            problem = url_problem(scope)
            if problem is not None and scope["type"] == "http":
                await JSONResponse({"detail": problem}, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def has_nul(value) -> str | None:
    """The path of the first string holding a NUL byte in a dumped request (keys too)."""
    if isinstance(value, str):
        return "" if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return str(key).replace("\x00", "\\0")
        found = has_nul(item)
        if found is not None:
            return f"{key}.{found}" if found else str(key)
    return None


def hide_paths(message: str, shown_as: dict[str, str]) -> str:
    """`message` with each server path (or temporary file name) replaced by what a user knows
    it as; longest first, so a folder does not cut a path inside it in two."""
    for path in sorted(shown_as, key=len, reverse=True):
        message = message.replace(path, shown_as[path])
    return message
