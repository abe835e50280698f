"""Reliability probes of the HTTP service (issue 21): ports out of range, API keys no client can send,
clients that hold connections with incomplete headers or slow bodies (against a real `sessrec serve`
on loopback), and the OpenAPI schema against the server (schemathesis, every check)."""

from __future__ import annotations

import pytest

from engine.cli import main as cli
from engine.core.errors import InputError


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


# ---- 5. slow clients against a real server ------------------------------------------------------------
def _start(ws_root, *args: str):
    import json
    import os
    import subprocess
    import sys

    from tests.reliability.helpers import ROOT
    proc = subprocess.Popen([sys.executable, "-m", "engine", "--workspace", str(ws_root), "--events", "jsonl",
                             "serve", "baseline:pop@demo-tiny", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        raise AssertionError(f"server did not start: {proc.stderr.read()}")
    return proc, json.loads(line)["port"]


def _stop(proc) -> None:
    import os
    import signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def _until_closed(sock, send=()) -> tuple[float, bytes]:
    """Seconds until the server closes `sock` (sending each chunk of `send` 0.2 s apart meanwhile),
    and what it answered."""
    import socket
    import time
    t0, got = time.monotonic(), b""
    sock.settimeout(0.2)
    chunks = list(send)
    while time.monotonic() - t0 < 20:
        if chunks:
            try:
                sock.sendall(chunks.pop(0))
            except OSError:
                break
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not data:
            break
        got += data
    return time.monotonic() - t0, got


@pytest.fixture(scope="module")
def slow_server(tiny_demo_ws):
    proc, port = _start(tiny_demo_ws.root, "--header-timeout", "1", "--body-timeout", "1.5",
                        "--max-connections", "20")
    yield port
    _stop(proc)


def test_5_headers_trickled_a_byte_at_a_time_are_cut_off(slow_server):
    import socket
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 50
    with socket.create_connection(("127.0.0.1", slow_server)) as s:
        held, got = _until_closed(s, [request[i:i + 1] for i in range(len(request))])
    assert 0.9 <= held < 3 and got == b""          # held 70 s and more before


def test_5_a_slow_body_gets_a_408_when_its_time_is_up(slow_server):
    import json
    import socket
    head = (b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40\r\n\r\n")
    with socket.create_connection(("127.0.0.1", slow_server)) as s:
        held, got = _until_closed(s, [head, b'{"session_items": [', b"1, "])
    assert 1.4 <= held < 3.5
    status, _, body = got.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408 Request Timeout")
    assert json.loads(body) == {"error": "request body not received within 1.5 s"}


def test_5_connections_past_the_limit_are_refused_and_held_ones_released(slow_server):
    import json
    import socket
    import time
    import urllib.request
    held = [socket.create_connection(("127.0.0.1", slow_server)) for _ in range(20)]   # they send nothing
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", slow_server)) as extra:
            _, got = _until_closed(extra)
        assert got.startswith(b"HTTP/1.1 503 Service Unavailable")
        assert json.loads(got.partition(b"\r\n\r\n")[2]) == {"error": "over 20 open connections; retry later"}
        closed = [_until_closed(s)[0] for s in held]          # the header deadline releases them all
        assert max(closed) < 3
    finally:
        for s in held:
            s.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{slow_server}/health", timeout=10) as r:
        assert r.status == 200


def test_5_every_server_gets_the_guarded_protocol_with_sane_defaults():
    from engine.serve.limits import ConnectionLimits
    from engine.serve.protocol import PROTOCOL
    from engine.serve.server import ServeOptions, _config
    config = _config(lambda scope, receive, send: None, ServeOptions(target="x"))
    assert config.http == PROTOCOL == "engine.serve.protocol:GuardedHttpProtocol"
    assert config.sessrec_limits == ConnectionLimits(header_timeout_s=10.0, body_timeout_s=30.0,
                                                     max_connections=1000)
