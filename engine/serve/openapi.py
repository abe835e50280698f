"""The OpenAPI document of the service, as OpenAPI 3.0.3.

FastAPI writes OpenAPI 3.1, whose JSON Schema (2020-12) counts any number with a zero fraction as an
integer: `263.0` would be a valid item id and `5.0` a valid k, so a schema-driven client (or
schemathesis) sends them, and the server, which takes a JSON integer only (`StrictInt`), refuses
them. OpenAPI 3.0 defines `integer` as "a JSON number without a fraction or exponent part", which is
exactly what the server accepts, so the document says 3.0.3 and spells the three constructs of
pydantic's schemas that 3.0 writes differently:

    {"anyOf": [S, {"type": "null"}]}    ->  S with "nullable": true (a $ref through allOf)
    {"exclusiveMaximum": N}             ->  {"maximum": N, "exclusiveMaximum": true} (and Minimum)
    {"examples": [...]}  in a schema    ->  {"example": ...}

Nothing else in the document changes.
"""

from __future__ import annotations

from typing import Any

OPENAPI_VERSION = "3.0.3"
_NULL = {"type": "null"}


def as_openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's OpenAPI 3.1 `document` written as OpenAPI 3.0.3 (a new dict)."""
    out = {k: _schema_walk(v) if k in ("paths", "components") else v for k, v in document.items()}
    out["openapi"] = OPENAPI_VERSION
    return out


def _schema_walk(node: Any) -> Any:
    if isinstance(node, list):
        return [_schema_walk(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _schema_walk(v) for k, v in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and _NULL in options:
        rest = [o for o in options if o != _NULL]
        del node["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            node = {**rest[0], **node}
        elif len(rest) == 1:
            node["allOf"] = rest            # 3.0 ignores the siblings of a $ref
        else:
            node["anyOf"] = rest
        node["nullable"] = True
    for bound, flag in (("exclusiveMaximum", "maximum"), ("exclusiveMinimum", "minimum")):
        value = node.get(bound)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            node[flag], node[bound] = value, True
    if isinstance(node.get("examples"), list) and "type" in node:     # a schema's examples, not a media type's
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]
    return node
