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
