"""The webhook signature, in one place: the dispatcher signs each delivery with it, and a
receiver (or `dcl_service.verify_signature`) checks it.

    X-DCL-Signature: t=UNIX_SECONDS,v1=HEX(hmac_sha256(secret, f"{t}.{raw_body}"))

The timestamp is signed with the body, so a captured delivery cannot be replayed later than
the receiver's tolerance. Standard library only: a receiver needs nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-DCL-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """HEX(hmac_sha256(secret, f"{t}.{body}"))."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={signature(secret, t, body)}"


def verify_signature(secret: str, header: str | None, body: bytes, *, tolerance_s: float = 300,
                     now: float | None = None) -> bool:
    """Whether `header` (the X-DCL-Signature value) signs `body` (the raw bytes received) with
    `secret`, at a time within `tolerance_s` of `now`. Compared in constant time."""
    if not header:
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = signature(secret, t, body)
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))
