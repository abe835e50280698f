"""uvicorn's HTTP protocol (httptools) with the bounds uvicorn lacks: time to send the headers, time to
send the body, and how many connections are open at once.

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but nothing bounds a client
that sends its request slowly: the keep-alive timer is cancelled by the first byte, and an ASGI app
cannot help (it runs once the headers are parsed, and then waits on `receive()` for the body). A
probe held 1,100 connections with incomplete headers or slow bodies for 70 s and more. So:

    header deadline  armed when a connection opens and when a response ends (the next request's
                     headers); the connection is closed if its headers are not complete in time
    body deadline    armed when the headers are complete, until the body is; on expiry a 408
                     (unless a response has started) and the connection is closed, so the app's
                     receive() gets http.disconnect
    connections      past `max_connections`, a new connection is answered 503 and closed at once

Public deployments still belong behind a reverse proxy that buffers requests (docs/serving-and-export.md,
"Slow clients").
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from engine.serve.limits import ConnectionLimits

PROTOCOL = "engine.serve.protocol:GuardedHttpProtocol"      # uvicorn.Config(http=...): importable by workers


def attach_limits(config: Any, limits: ConnectionLimits) -> None:
    """Give a uvicorn Config the limits its GuardedHttpProtocol connections read (pickled with it to
    the worker processes of `--workers N`)."""
    config.http = PROTOCOL
    config.sessrec_limits = limits


def _response(status: int, reason: str, error: str) -> bytes:
    body = json.dumps({"error": error}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header and body deadlines and a cap on open connections."""

    _warned_at = float("-inf")          # loop time of the last "refusing connections" warning

    def __init__(self, config: Any, *args: Any, **kw: Any) -> None:
        super().__init__(config, *args, **kw)
        self.limits: ConnectionLimits = getattr(config, "sessrec_limits", None) or ConnectionLimits()
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, expired) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # ---- the connection ----------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            now = self.loop.time()
            if now - GuardedHttpProtocol._warned_at >= 10:    # one line per 10 s, not one per attempt
                GuardedHttpProtocol._warned_at = now
                self.logger.warning("refusing connections: %d open (--max-connections)", self.limits.max_connections)
            transport.write(_response(503, "Service Unavailable",
                                      f"over {self.limits.max_connections} open connections; retry later"))
            transport.close()
            return
        self._arm(self.limits.header_timeout_s, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # ---- a request: headers, then body ----------------------------------------------------------------
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.limits.body_timeout_s, self._body_late)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)          # a pipelined request's headers are in already
        super().on_response_complete()
        if not queued and not self.transport.is_closing():
            self._arm(self.limits.header_timeout_s, self._headers_late)

    def _headers_late(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_response(408, "Request Timeout", f"request body not received within "
                                                                   f"{self.limits.body_timeout_s:g} s"))
        self.transport.close()
