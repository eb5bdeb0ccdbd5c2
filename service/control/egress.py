"""Where the service may send requests of its own (webhook deliveries): the guard against
server-side request forgery.

A webhook URL is the user's, but the request comes from inside the operator's network. So a
target must be http(s), carry no credentials, and every address its host resolves to must be
a public one: loopback, private, link-local (cloud metadata at 169.254.169.254 among them),
shared, multicast, reserved and unspecified addresses are refused, IPv4-mapped IPv6 included,
unless the operator sets DCL_WEBHOOK_ALLOW_PRIVATE=true. The check runs when a hook is made
and again before every delivery, and the delivery connects to the very address that was
checked (a name that resolves elsewhere a second later is not followed).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048

Resolve = Callable[..., list]
"""`socket.getaddrinfo`, or a stand-in in tests."""


class UnsafeTarget(ValueError):
    """A URL the service will not send to; the message says why and what to do."""


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a well-formed http(s) URL; UnsafeTarget otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeTarget(f"is longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise UnsafeTarget("contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("must start with https:// (or http://)")
    if not parts.hostname:
        raise UnsafeTarget("has no host; write it as https://HOST/PATH")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("must not carry a user name or password; check the X-DCL-Signature header instead")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # no IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def public_addresses(host: str, port: int, *, allow_private: bool, resolve: Resolve = socket.getaddrinfo) -> list[str]:
    """The addresses `host` resolves to, every one of them public (unless `allow_private`);
    UnsafeTarget naming the first that is not, or when the name does not resolve."""
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeTarget(f"host {host!r} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise UnsafeTarget(f"host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise UnsafeTarget(
                    f"host {host!r} resolves to {address}, a loopback, private, link-local or otherwise non-public "
                    "address, which this server does not send to (its operator can allow it with "
                    "DCL_WEBHOOK_ALLOW_PRIVATE=true)")
    return addresses


def check_target(url: str, *, allow_private: bool, resolve: Resolve = socket.getaddrinfo) -> list[str]:
    """UnsafeTarget unless `url` is a URL the service may send to; its checked addresses."""
    _, host, port = check_url(url)
    return public_addresses(host, port, allow_private=allow_private, resolve=resolve)
