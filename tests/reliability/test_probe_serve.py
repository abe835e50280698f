"""Reliability probes of the HTTP service (issue 21): ports out of range, API keys no client can send,
clients that hold connections with incomplete headers or slow bodies (against a real `sessrec serve`
on loopback), and the OpenAPI schema against the server (schemathesis, every check)."""

from __future__ import annotations

import pytest

from engine.cli import main as cli
from engine.errors import InputError


# ---- 3. ports outside 0..65535 -----------------------------------------------------------------------
@pytest.mark.parametrize("port", ["70000", "-1"])
def test_3_a_port_out_of_range_is_a_usage_error(tmp_path, capsys, port):
    # was "internal error: OverflowError: bind(): port must be 0-65535", after loading the model
    assert cli(["--workspace", str(tmp_path), "serve", "no-such-run", "--port", port]) == 2
    assert capsys.readouterr().err == (f"sessrec: error: argument --port: port: must be >= 0 and <= 65535 "
                                       f"(got {port}) (see `sessrec serve --help`)\n")


def test_3_the_library_refuses_it_too():
    from engine.serve.server import _bind
    with pytest.raises(InputError, match="cannot listen on 127.0.0.1:70000: a port is a number from 0 to 65535"):
        _bind("127.0.0.1", 70000)


# ---- 6. API keys that no client can match -------------------------------------------------------------
@pytest.mark.parametrize("key, error", [
    (" " * 16, "the API key holds a space or tab at position 1"),
    ("s3cret-key-0123456789 ", "the API key holds a space or tab at position 22"),
    ("s3cret\tkey-0123456789", "the API key holds a space or tab at position 7"),
    ("clé-secrète-0123456789", "the API key holds the character 'é' at position 3"),
    ("k" * 24, "the API key has 1 different characters; a key needs at least 8"),
    ("short", "the API key must be at least 16 characters"),
])
def test_6_a_key_no_client_can_send_is_refused_at_start(tmp_path, capsys, monkeypatch, key, error):
    monkeypatch.delenv("SESSREC_API_KEY", raising=False)
    monkeypatch.delenv("SESSREC_ADMIN_KEY", raising=False)
    assert cli(["--workspace", str(tmp_path), "serve", "no-such-run", "--api-key", key]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sessrec: error: {error}") and err.count("\n") == 1, err
    monkeypatch.setenv("SESSREC_ADMIN_KEY", key)          # the admin key follows the same rule
    assert cli(["--workspace", str(tmp_path), "serve", "no-such-run"]) == 2
    assert error.replace("the API key", "the admin key (SESSREC_ADMIN_KEY)") in capsys.readouterr().err


def test_6_a_generated_key_passes():
    import secrets

    from engine.serve.security import check_key
    for _ in range(200):
        check_key("the API key", secrets.token_urlsafe(24))
