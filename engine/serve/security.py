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
MIN_KEY_DISTINCT = 8               # different characters (token_urlsafe(24) has ~25 of its 32)
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
        if key is not None:
            check_key(what, key)


def check_key(what: str, key: str) -> None:
    """InputError unless a client can send `key` and it is not guessable at a glance.

    Visible ASCII only: HTTP trims spaces and tabs around a header value, so a key that starts or
    ends with one (or is all spaces) could never match, and other bytes do not survive every client.
    At least MIN_KEY_DISTINCT different characters: 'kkkk...' is no secret.
    """
    how = "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
    if len(key) < MIN_KEY_CHARS:
        raise InputError(f"{what} must be at least {MIN_KEY_CHARS} characters ({how})")
    bad = next((c for c in key if not "!" <= c <= "~"), None)
    if bad is not None:
        kind = "a space or tab" if bad in " \t" else f"the character {bad!r}"
        raise InputError(f"{what} holds {kind} at position {key.index(bad) + 1}: a key is visible ASCII "
                         f"without spaces (HTTP trims them around header values, so no client could "
                         f"match it; {how})")
    if len(set(key)) < MIN_KEY_DISTINCT:
        raise InputError(f"{what} has {len(set(key))} different characters; a key needs at least "
                         f"{MIN_KEY_DISTINCT} ({how})")


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
