"""Plain-ASGI JSON endpoints: the service's hot path without FastAPI's request machinery.

FastAPI resolves dependencies, reads and validates the body and encodes the answer through layers
that cost ~0.27 ms a request on the 2-core dev CPU (a stub model answering at once: 0.71-0.74 ms
round trip through a FastAPI route, 0.45-0.46 ms served here; a whole /recommend on the 238K-item
demo takes 4-6 ms). The recommendation endpoints are therefore served here: pydantic validates the
raw body in one call, and errors keep the app's format (`{"error": ..., "detail": [...]}`, fields
named `body.<field>` as FastAPI names them). Their handlers are FastAPI routes too, so the OpenAPI
schema documents them from the same models; the app's guard answers their paths first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from pydantic import BaseModel, ValidationError


class RequestError(Exception):
    """A handler's refusal of a well-formed request: sent as `status` with the app's error body."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(body.get("error"))
        self.status, self.body = status, body


def field_error(field: str, message: str) -> RequestError:
    """A 422 naming a body field, in the format of the validation errors."""
    return RequestError(422, validation_error([{"loc": ("body", field), "msg": message, "type": "value_error"}]))


@dataclass(frozen=True)
class JsonEndpoint:
    """POST `request` (a pydantic model) -> `handle(request)` -> a dict sent as JSON."""
    request: type[BaseModel]
    handle: Callable[[Any], Awaitable[dict]]
    status: int = 200                   # of a successful answer


async def send_json(send, status: int, body: dict, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


def validation_error(errors: list[dict]) -> dict:
    """The 422 body of the app for pydantic/FastAPI error dicts (`loc` already from the request's root)."""
    where = lambda e: ".".join(str(p) for p in e.get("loc", ()))  # noqa: E731
    return {"error": "; ".join(f"{where(e)}: {e.get('msg')}" for e in errors[:5]),
            "detail": [{"field": where(e), "message": e.get("msg"), "type": e.get("type")} for e in errors[:20]]}


async def serve_json(endpoint: JsonEndpoint, scope, receive, send) -> None:
    """A POST to `endpoint` (the guard has answered other methods with a 405)."""
    body = bytearray()
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":       # the client left, or the guard refused the body
            return
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    try:
        req = endpoint.request.model_validate_json(bytes(body))
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        return await send_json(send, 422, validation_error(errors))
    try:
        out = await endpoint.handle(req)
    except RequestError as e:
        return await send_json(send, e.status, e.body)
    except Exception as e:          # a bug: a JSON 500, never a crash (as the app's other routes)
        return await send_json(send, 500, internal_error(e))
    await send_json(send, endpoint.status, out)


def internal_error(e: BaseException) -> dict:
    """The 500 body of the app: a bug, named by its type only."""
    return {"error": f"internal error: {type(e).__name__}"}
