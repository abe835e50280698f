"""How long a client may take to send a request, and how many connections a server holds: the
values `engine.serve.protocol` enforces (here, without uvicorn, for the CLI's flags)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0     # nginx's client_header_timeout is 60 s; an API client needs < 1 s
    body_timeout_s: float = 30.0       # a 1 MiB body (the largest accepted) at 35 KB/s
    max_connections: int = 1000        # per worker process; each costs a file descriptor and a parser
