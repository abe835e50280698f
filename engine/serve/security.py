"""Who may call the service: loopback by default; any other bind address needs an API key (or an
explicit --insecure); admin endpoints always need a key: the API key, or the admin key.

The admin key (SESSREC_ADMIN_KEY, environment only) opens /admin/* and nothing else: the app gives
each server it starts a fresh one, so that it can reload the server without every client needing a
key."""

from __future__ import annotations

import hmac
import ipaddress

from engine.core.errors import InputError

KEY_ENV = "SESSREC_API_KEY"
ADMIN_KEY_ENV = "SESSREC_ADMIN_KEY"
MIN_KEY_CHARS = 16
KEY_HEADER = "X-API-Key"           # HTTP header names are case-insensitive


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None, insecure: bool, admin_key: str | None = None) -> None:
    if not is_loopback(host) and not api_key and not insecure:
        raise InputError(f"binding to {host!r} exposes the service beyond this machine: give an API key "
                         f"(--api-key or {KEY_ENV}) or pass --insecure to serve without one")
    for what, key in (("the API key", api_key), (f"the admin key ({ADMIN_KEY_ENV})", admin_key)):
        if key is not None and len(key) < MIN_KEY_CHARS:
            raise InputError(f"{what} must be at least {MIN_KEY_CHARS} characters (e.g. `python -c 'import "
                             f"secrets; print(secrets.token_urlsafe(24))'`)")


def key_matches(headers: dict[bytes, bytes] | list, expected: str) -> bool:
    """Constant-time comparison of the X-API-Key header (or `Authorization: Bearer KEY`)."""
    got = b""
    for name, value in headers:
        n = name.lower()
        if n == KEY_HEADER.lower().encode():
            got = value
        elif n == b"authorization" and value[:7].lower() == b"bearer ":
            got = value[7:]
    return hmac.compare_digest(got, expected.encode())
