"""The HTTP service: every endpoint's success and error cases (FastAPI's test client), the API-key
and bind rules, metrics, hot reload (in process and under concurrent load in a real server), the
OpenAPI schema against what the server answers, and a schema-driven fuzz test (schemathesis, every
check: no 5xx, and every answer as the schema documents it)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from engine.core.errors import InputError
from engine.serve.app import INLINE_MAX_SESSIONS, ServeSettings, create_app
from engine.serve.openapi import as_openapi_30
from engine.serve.schemas import (MAX_BATCH_SESSIONS, MAX_BODY_BYTES, BatchResponse, ErrorResponse, RecommendResponse,
                                  ReloadAccepted, ReloadBusy, ValidationErrorResponse)
from engine.serve.security import check_bind
from engine.serve.server import ServeOptions, make_slot
from engine.train.loop import fit
from tests.conftest import small_cfg

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def ws(tiny_demo_ws):
    fit(small_cfg(epochs=1), tiny_demo_ws, run_id="serve-a")
    fit(small_cfg(epochs=1, seed=1), tiny_demo_ws, run_id="serve-b")
    return tiny_demo_ws


@pytest.fixture(scope="module")
def slot(ws):
    return make_slot(ws, ServeOptions(target="serve-a", search="exact"))


@pytest.fixture(scope="module")
def client(slot):
    return TestClient(create_app(slot))


@pytest.fixture(scope="module")
def ids(slot):
    return slot.current.rec.items.raw_ids[:12].tolist()


def metric(text: str, name: str, **labels) -> float:
    """The value of the sample `name` with exactly these labels (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name == name and smp.labels == labels:
                return smp.value
    return 0.0


def test_health_says_what_is_served(client):
    h = client.get("/health").json()
    assert (h["status"], h["model"], h["run_id"], h["dataset"]) == ("ok", "graph_transformer", "serve-a", "demo-tiny")
    # 199 trained items and the one item of the demo's metadata that training never saw (scored from its features)
    assert h["n_items"] == 200 and h["runtime"] == "torch" and h["device"] == "cpu"
    assert h["search"] == {"kind": "exact"} and h["reload"]["state"] == "idle" and h["uptime_s"] >= 0


def test_recommend_answers_what_the_engine_answers(client, slot, ids):
    body = {"session_items": [ids[3], 10**15, ids[5]], "k": 7}
    r = client.post("/recommend", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    got = r.json()
    # the endpoint sends its body as built: it must still be exactly what the schema at /docs says
    assert RecommendResponse.model_validate_json(r.content, strict=True).model_dump() == got
    expect = slot.current.rec.recommend([ids[3], 10**15, ids[5]], k=7)
    assert got["items"] == expect.items and np.allclose(got["scores"], expect.scores, atol=1e-5)
    assert got["unknown_items"] == [10**15] and not got["fallback"] and got["run_id"] == "serve-a"
    ex = client.post("/recommend", json={**body, "exclude_session_items": True}).json()
    assert not {ids[3], ids[5]} & set(ex["items"]) and len(ex["items"]) == 7
    fb = client.post("/recommend", json={"session_items": [0], "k": 2}).json()      # 0: an id no log held
    assert fb["fallback"] and fb["items"] == ids[:2] and fb["unknown_items"] == [0]


def test_batch_answers_each_session(client, slot, ids):
    sessions = [[ids[1]], [ids[2], ids[2], ids[7]], [123456789123]]
    r = client.post("/recommend/batch", json={"sessions": sessions, "k": 4})
    assert r.status_code == 200
    assert BatchResponse.model_validate_json(r.content, strict=True).model_dump() == r.json()
    res = r.json()["results"]
    assert [x["items"] for x in res] == [slot.current.rec.recommend(s, 4).items for s in sessions]
    assert res[2]["fallback"] and res[2]["unknown_items"] == [123456789123]


async def test_a_lone_request_is_scored_on_the_loop_and_others_by_the_scoring_thread(slot, ids, monkeypatch):
    app = create_app(slot)
    served = slot.current
    handed = []
    submit = served.batcher.submit
    monkeypatch.setattr(served.batcher, "submit", lambda s, k, e, *o: handed.append(len(s)) or submit(s, k, e, *o))
    expect = slot.current.rec.recommend([ids[3]], k=5).items
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as c:
        one = {"session_items": [ids[3]], "k": 5}
        r = await c.post("/recommend", json=one)
        assert r.json()["items"] == expect and handed == []          # alone: no hand-over
        held = slot.acquire()                   # another request in flight: this one joins the batches
        try:
            r = await c.post("/recommend", json=one)
        finally:
            slot.release(held)
        assert r.json()["items"] == expect and handed == [1]
        r = await c.post("/recommend/batch", json={"sessions": [[ids[3]]] * (INLINE_MAX_SESSIONS + 1), "k": 5})
        assert r.status_code == 200 and handed == [1, INLINE_MAX_SESSIONS + 1]    # too big for the loop
        rs = await asyncio.gather(*(c.post("/recommend", json=one) for _ in range(6)))
        assert [x.json()["items"] for x in rs] == [expect] * 6
    assert served.inflight == 0


@pytest.mark.parametrize("body, field", [
    ({"session_items": [1], "k": 0}, "body.k"),
    ({"session_items": [1], "k": 101}, "body.k"),
    ({"session_items": [], "k": 5}, "body.session_items"),
    ({"session_items": ["abc"]}, "body.session_items.0"),
    ({"session_items": [2 ** 70]}, "body.session_items.0"),
    ({"session_items": [1] * 1001}, "body.session_items"),
    ({"session_items": [1], "colour": "red"}, "body.colour"),
    ({"k": 5}, "body.session_items"),
    ({"session_items": [1], "k": "many"}, "body.k"),
])
def test_bad_requests_name_the_field(client, body, field):
    r = client.post("/recommend", json=body)
    assert r.status_code == 422
    assert r.json()["error"].startswith(field) and r.json()["detail"][0]["field"] == field


@pytest.mark.parametrize("path, body, field", [
    ("/recommend", {"session_items": [True]}, "body.session_items.0"),
    ("/recommend", {"session_items": [263.0]}, "body.session_items.0"),
    ("/recommend", {"session_items": [263.5]}, "body.session_items.0"),
    ("/recommend", {"session_items": ["5"]}, "body.session_items.0"),
    ("/recommend", {"session_items": [None]}, "body.session_items.0"),
    ("/recommend", {"session_items": [1], "k": True}, "body.k"),
    ("/recommend", {"session_items": [1], "k": 5.0}, "body.k"),
    ("/recommend", {"session_items": [1], "k": "5"}, "body.k"),
    ("/recommend/batch", {"sessions": [[1, False]]}, "body.sessions.0.1"),
    ("/recommend/batch", {"sessions": [[1]], "k": 2.0}, "body.k"),
])
def test_an_id_or_k_is_a_json_integer_never_a_boolean_float_or_string(client, path, body, field):
    # pydantic's lax mode took true as 1, 263.0 as 263 and "5" as 5 (issue 21, finding 16)
    r = client.post(path, json=body)
    assert r.status_code == 422
    assert r.json()["error"] == f"{field}: Input should be a valid integer"
    assert r.json()["detail"] == [{"field": field, "message": "Input should be a valid integer", "type": "int_type"}]


def test_an_id_is_a_whole_number_from_0_to_2_63_minus_1_and_the_flag_a_boolean(client):
    top = 2 ** 63 - 1
    r = client.post("/recommend", json={"session_items": [top, 0], "k": 3})
    assert r.status_code == 200 and r.json()["unknown_items"] == [top, 0] and r.json()["fallback"]
    for raw, message in ((b"[9223372036854775808]", "Input should be less than 9223372036854775808"),
                         (b"[-1]", "Input should be greater than or equal to 0"),
                         (b"[2.63e2]", "Input should be a valid integer")):      # an exponent: a float
        r = client.post("/recommend", content=b'{"session_items": ' + raw + b"}",
                        headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"] == f"body.session_items.0: {message}"
    r = client.post("/recommend", json={"session_items": [1], "exclude_session_items": 1})
    assert r.status_code == 422 and r.json()["error"] == "body.exclude_session_items: Input should be a valid boolean"
    r = client.post("/admin/reload", json={"target": 5})
    assert r.status_code == 403          # no key: refused before the body is read


def test_malformed_oversized_and_misrouted_requests_are_4xx(client):
    r = client.post("/recommend", content=b'{"session_items": [1,', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    r = client.post("/recommend/batch", json={"sessions": [[1]] * (MAX_BATCH_SESSIONS + 1)})
    assert r.status_code == 422 and r.json()["error"].startswith("body.sessions")
    big = b'{"session_items": [' + b"1," * (MAX_BODY_BYTES // 2) + b"1]}"
    assert client.post("/recommend", content=big, headers={"content-type": "application/json"}).status_code == 413

    def chunks():                                 # no Content-Length: the limit counts the bytes
        yield b'{"session_items": ['
        for _ in range(40):
            yield b"1," * 20_000
        yield b"1]}"
    r = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["error"]
    r = client.post("/recommend", content=b"[1]", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body"
    r = client.get("/recommend")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert ErrorResponse.model_validate_json(r.content, strict=True).error == "method GET not allowed: use POST"
    assert client.get("/nowhere").status_code == 404


@pytest.mark.parametrize("keyed", [False, True])
def test_a_wrong_method_is_a_405_naming_the_allowed_ones(slot, keyed):
    # RFC 9110: a 405 carries Allow. FastAPI's handler dropped it; with a key, a TRACE was a 401
    c = TestClient(create_app(slot, ServeSettings(api_key=KEY if keyed else None)))
    for path, allow in (("/health", "GET"), ("/recommend", "POST"), ("/recommend/batch", "POST"),
                        ("/metrics", "GET"), ("/admin/reload", "POST"), ("/docs", "GET, HEAD"),
                        ("/openapi.json", "GET, HEAD"), ("/redoc", "GET, HEAD")):
        for method in ("TRACE", "PUT", "DELETE", "PATCH", "OPTIONS"):
            r = c.request(method, path)
            assert (r.status_code, r.headers.get("allow")) == (405, allow), (method, path)
            ErrorResponse.model_validate_json(r.content, strict=True)
        if allow == "GET":
            assert c.head(path).headers.get("allow") == "GET"
    hdr = {"X-API-Key": KEY} if keyed else {}
    assert c.head("/docs", headers=hdr).status_code == 200      # Starlette answers HEAD where it says so


def test_metrics_count_requests_by_endpoint_and_status(slot):
    c = TestClient(create_app(slot))            # its own registry: counts start at zero
    for _ in range(3):
        c.post("/recommend", json={"session_items": [1]})
    c.post("/recommend", json={"session_items": []})
    text = c.get("/metrics").text
    assert metric(text, "sessrec_requests_total", endpoint="/recommend", status="200") == 3
    assert metric(text, "sessrec_requests_total", endpoint="/recommend", status="422") == 1
    assert metric(text, "sessrec_request_duration_seconds_count", endpoint="/recommend") == 4
    assert metric(text, "sessrec_model_info", model="graph_transformer", run_id="serve-a", dataset="demo-tiny",
                  runtime="torch") == 1


def test_api_key_rules(slot):
    c = TestClient(create_app(slot, ServeSettings(api_key=KEY)))
    body = {"session_items": [1]}
    assert c.post("/recommend", json=body).status_code == 401
    assert c.post("/recommend", json=body, headers={"X-API-Key": KEY[:-1] + "x"}).status_code == 401
    assert c.post("/recommend", json=body, headers={"X-API-Key": KEY}).status_code == 200
    assert c.post("/recommend", json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert c.get("/metrics").status_code == 401 and c.get("/docs").status_code == 401
    assert c.get("/health").status_code == 200
    # admin endpoints: always the key; without a configured key they are closed
    assert c.post("/admin/reload").status_code == 401
    nokey = TestClient(create_app(slot))
    r = nokey.post("/admin/reload")
    assert r.status_code == 403 and "need a key" in r.json()["error"]
    check_bind("127.0.0.1", None, False)
    check_bind("::1", None, False)
    check_bind("localhost", None, False)
    with pytest.raises(InputError, match="API key"):
        check_bind("0.0.0.0", None, False)
    check_bind("0.0.0.0", None, True)
    check_bind("0.0.0.0", KEY, False)
    with pytest.raises(InputError, match="16 characters"):
        check_bind("127.0.0.1", "short", False)
    with pytest.raises(InputError, match="admin key .*16 characters"):
        check_bind("127.0.0.1", None, False, admin_key="short")


def test_the_admin_key_opens_the_admin_endpoints_and_nothing_else(ws, slot, monkeypatch):
    admin = "adm1n-key-0123456789"
    open_ = TestClient(create_app(slot, ServeSettings(admin_key=admin)))   # no API key: clients need none
    assert open_.post("/recommend", json={"session_items": [1]}).status_code == 200
    assert open_.post("/admin/reload").status_code == 401
    assert open_.post("/admin/reload", headers={"X-API-Key": KEY}).status_code == 401
    assert open_.post("/admin/reload", headers={"X-API-Key": admin}).status_code in (202, 409)
    both = TestClient(create_app(slot, ServeSettings(api_key=KEY, admin_key=admin)))
    assert both.post("/recommend", json={"session_items": [1]}, headers={"X-API-Key": admin}).status_code == 401
    assert both.get("/metrics", headers={"X-API-Key": admin}).status_code == 401
    assert both.post("/recommend", json={"session_items": [1]}, headers={"X-API-Key": KEY}).status_code == 200
    # `sessrec serve` takes the admin key from the environment only
    import engine.serve.server as server
    seen = {}
    monkeypatch.setattr(server, "serve", lambda ws, opts, on_ready: seen.setdefault("opts", opts) and 0)
    monkeypatch.setenv("SESSREC_ADMIN_KEY", admin)
    monkeypatch.delenv("SESSREC_API_KEY", raising=False)
    from engine.cli import main as cli
    assert cli(["--workspace", str(ws.root), "serve", "serve-a"]) == 0
    assert seen["opts"].admin_key == admin and seen["opts"].api_key is None


def test_reload_swaps_the_model_and_a_failed_reload_keeps_it(ws):
    slot = make_slot(ws, ServeOptions(target="serve-a", search="exact"))
    c = TestClient(create_app(slot, ServeSettings(api_key=KEY)))
    hdr = {"X-API-Key": KEY}
    assert c.post("/admin/reload", json={"target": "serve-b"}, headers=hdr).status_code == 202
    deadline = time.monotonic() + 30
    while c.get("/health").json()["reload"]["state"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    h = c.get("/health").json()
    assert h["run_id"] == "serve-b" and h["reload"]["state"] == "idle"
    assert c.post("/recommend", json={"session_items": [1]}, headers=hdr).json()["run_id"] == "serve-b"
    assert slot.reload("no-such-run", wait=True)
    h = c.get("/health").json()
    assert h["run_id"] == "serve-b" and h["reload"]["state"] == "failed" and "no-such-run" in h["reload"]["error"]
    text = c.get("/metrics", headers=hdr).text
    assert metric(text, "sessrec_reloads_total", result="ok") == 1
    assert metric(text, "sessrec_reloads_total", result="failed") == 1
    assert metric(text, "sessrec_model_info", model="graph_transformer", run_id="serve-b", dataset="demo-tiny",
                  runtime="torch") == 1


# ---- the schema, and fuzz: every operation, generated bodies, every check of schemathesis ---------
def test_the_schema_documents_the_plain_endpoints(client):
    schema = client.get("/openapi.json").json()
    for path, body, answer in (("/recommend", "RecommendRequest", "RecommendResponse"),
                               ("/recommend/batch", "BatchRequest", "BatchResponse")):
        op = schema["paths"][path]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/" + body)
        assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/" + answer)
        assert {body, answer} <= set(schema["components"]["schemas"])
    assert client.get("/docs").status_code == 200


def codes(op: dict) -> dict[str, str]:
    """status -> the component its JSON body is documented as (or its media types)."""
    out = {}
    for status, resp in op["responses"].items():
        content = resp.get("content", {})
        ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
        out[status] = ref.rsplit("/", 1)[-1] if ref else ",".join(content)
    return out


def test_the_schema_says_what_an_id_and_k_are(client):
    # issue 21, finding 16: the id bounds were absent (2**63 - 1 printed as the float 2**63), and
    # OpenAPI 3.1's integer, any number with a zero fraction, takes 263.0, which the server refuses
    schema = client.get("/openapi.json").json()
    assert schema["openapi"] == "3.0.3"
    schemas = schema["components"]["schemas"]
    item = schemas["RecommendRequest"]["properties"]["session_items"]["items"]
    # 2**63 - 1 is no float; 2**63 is, and exclusive. OpenAPI 3.0's integer has no fraction or exponent
    assert (item["type"], item["minimum"], item["maximum"], item["exclusiveMaximum"]) == ("integer", 0, 2 ** 63, True)
    assert schemas["BatchRequest"]["properties"]["sessions"]["items"]["items"] == item
    k = schemas["RecommendRequest"]["properties"]["k"]
    assert (k["type"], k["minimum"], k["maximum"]) == ("integer", 1, 100) and "exclusiveMaximum" not in k
    assert schemas["RecommendRequest"]["properties"]["exclude_session_items"]["type"] == "boolean"
    assert schemas["Health"]["properties"]["run_id"] == {"type": "string", "nullable": True, "title": "Run Id"}
    assert '"null"' not in json.dumps(schema)          # 3.1's null type: 3.0 says nullable


def test_the_schema_documents_every_answer_the_server_gives(slot):
    # issue 21, finding 16: 401/403/409/413 undocumented, 422 documented as FastAPI's loc/msg, /metrics
    # as JSON
    plain = TestClient(create_app(slot)).get("/openapi.json").json()
    keyed = TestClient(create_app(slot, ServeSettings(api_key=KEY))).get("/openapi.json", headers={"X-API-Key": KEY}).json()
    E, V = "ErrorResponse", "ValidationErrorResponse"
    assert codes(plain["paths"]["/recommend"]["post"]) == {"200": "RecommendResponse", "400": E, "413": E, "422": V}
    assert codes(keyed["paths"]["/recommend"]["post"]) == {"200": "RecommendResponse", "400": E, "401": E, "413": E,
                                                          "422": V}
    assert codes(keyed["paths"]["/recommend/batch"]["post"]) == {"200": "BatchResponse", "400": E, "401": E,
                                                                "413": E, "422": V}
    assert codes(plain["paths"]["/metrics"]["get"]) == {"200": "text/plain", "400": E, "413": E}
    assert codes(keyed["paths"]["/metrics"]["get"]) == {"200": "text/plain", "400": E, "401": E, "413": E}
    assert codes(plain["paths"]["/health"]["get"]) == {"200": "Health", "400": E, "413": E}
    assert codes(plain["paths"]["/admin/reload"]["post"]) == {"202": "ReloadAccepted", "400": E, "403": E,
                                                             "409": "ReloadBusy", "413": E, "422": V}
    assert codes(keyed["paths"]["/admin/reload"]["post"]) == {"202": "ReloadAccepted", "400": E, "401": E,
                                                             "409": "ReloadBusy", "413": E, "422": V}
    assert "security" not in plain["paths"]["/recommend"]["post"] and "securitySchemes" not in plain["components"]
    assert keyed["paths"]["/recommend"]["post"]["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert "security" not in keyed["paths"]["/health"]["get"]
    schemas = plain["components"]["schemas"]
    assert set(schemas[V]["required"]) == {"error", "detail"} and schemas[E]["additionalProperties"] is False
    assert set(schemas["FieldError"]["properties"]) == {"field", "message", "type"}


def test_the_openapi_31_constructs_are_written_as_30():
    doc = {"openapi": "3.1.0", "info": {"title": "t"}, "paths": {"/r": {"post": {"requestBody": {"content": {
        "application/json": {"schema": {"anyOf": [{"$ref": "#/components/schemas/R"}, {"type": "null"}],
                                        "title": "Req"}}}}}}},
           "components": {"schemas": {"R": {"properties": {
               "a": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}], "default": None},
               "b": {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]},
               "c": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 2.5, "examples": [1, 2]},
               "examples": {"type": "boolean"}}}}}}
    out = as_openapi_30(doc)
    assert out["openapi"] == "3.0.3" and out["info"] == {"title": "t"} and doc["openapi"] == "3.1.0"
    body = out["paths"]["/r"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"allOf": [{"$ref": "#/components/schemas/R"}], "title": "Req", "nullable": True}
    props = out["components"]["schemas"]["R"]["properties"]
    assert props["a"] == {"type": "string", "maxLength": 3, "default": None, "nullable": True}
    assert props["b"] == {"anyOf": [{"type": "integer"}, {"type": "string"}], "nullable": True}
    assert props["c"] == {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "maximum": 2.5,
                          "exclusiveMaximum": True, "example": 1}
    assert props["examples"] == {"type": "boolean"}


def test_every_error_body_is_the_documented_model(slot, monkeypatch):
    c = TestClient(create_app(slot, ServeSettings(api_key=KEY)))
    hdr = {"X-API-Key": KEY, "content-type": "application/json"}
    answers = [c.post("/recommend", json={"session_items": [1]}),                                   # 401
               c.get("/metrics", headers={"X-API-Key": "wrong-key-0123456789"}),                  # 401
               TestClient(create_app(slot)).post("/admin/reload"),                                 # 403
               c.post("/recommend", content=b"1" * (MAX_BODY_BYTES + 1), headers=hdr),             # 413
               c.get("/health", headers={"content-length": "many"}),                               # 400
               c.post("/recommend", content=b"{", headers=hdr),                                    # 422
               c.post("/admin/reload", json={"target": 5}, headers={"X-API-Key": KEY})]            # 422
    assert [r.status_code for r in answers] == [401, 401, 403, 413, 400, 422, 422]
    for r in answers:
        assert r.headers["content-type"] == "application/json"
        model = ValidationErrorResponse if r.status_code == 422 else ErrorResponse
        model.model_validate_json(r.content, strict=True)
    assert answers[-1].json()["detail"][0] == {"field": "body.target", "message": "Input should be a valid string",
                                               "type": "string_type"}
    monkeypatch.setattr(slot, "reload", lambda target=None, wait=False: False)     # one already running
    r = c.post("/admin/reload", headers={"X-API-Key": KEY})
    assert r.status_code == 409 and ReloadBusy.model_validate_json(r.content, strict=True).reload.state == "idle"
    monkeypatch.setattr(slot, "reload", lambda target=None, wait=False: True)
    r = c.post("/admin/reload", headers={"X-API-Key": KEY})
    assert r.status_code == 202 and ReloadAccepted.model_validate_json(r.content, strict=True).accepted
    m = c.get("/metrics", headers={"X-API-Key": KEY})
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")


def test_the_fastapi_routes_behind_the_guard_answer_as_the_plain_endpoints(client, slot, ids):
    # the same app with a guard that serves no path itself: FastAPI validates and serves the handlers
    app = create_app(slot)
    guard = next(m for m in app.user_middleware if m.cls.__name__ == "Guard")
    guard.kwargs["endpoints"] = {}
    router = TestClient(app)
    for path, body in (("/recommend", {"session_items": [ids[3], ids[5]], "k": 4}),
                       ("/recommend/batch", {"sessions": [[ids[1]], [ids[2], ids[7]]], "k": 3})):
        fast, routed = client.post(path, json=body).json(), router.post(path, json=body).json()
        fast.pop("latency_ms"), routed.pop("latency_ms")
        assert routed == fast
        bad = router.post(path, json={**body, "k": 0})         # FastAPI's 422, in the app's format
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "body.k"


@pytest.fixture(scope="module")
def api_schema(slot):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(slot))


@pytest.fixture(scope="module")
def keyed_api_schema(slot):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(slot, ServeSettings(api_key=KEY)),
                                          headers={"X-API-Key": KEY})      # the schema needs the key too


fuzz_schema = schemathesis.pytest.from_fixture("api_schema")
keyed_fuzz_schema = schemathesis.pytest.from_fixture("keyed_api_schema")
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@fuzz_schema.parametrize()
@FUZZ
def test_fuzzed_requests_pass_every_check(case):
    """Every check of schemathesis (its default: `--checks all`), positive and negative cases: no
    5xx, every status, content type, header and body as the schema documents them, valid requests
    accepted, invalid ones refused, undeclared methods a 405 with Allow."""
    case.call_and_validate()


@keyed_fuzz_schema.parametrize()
@FUZZ
def test_fuzzed_requests_to_a_server_with_a_key_pass_every_check(case):
    # the schema declares the key; ignored_auth sends requests without it and expects a 401
    case.call_and_validate(headers={"X-API-Key": KEY})


# ---- a real server: hot reload under concurrent requests, SIGHUP, SIGTERM -------------------------
def start_server(ws, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, "-m", "engine", "--workspace", str(ws.root), "--events", "jsonl", "serve",
           *args, "--port", "0"]
    # its own process group: a failed test kills the server and any worker processes it started
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})})
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"server did not start: {proc.stderr.read()}")
    return proc, json.loads(line)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def test_hot_reload_under_concurrent_requests_drops_nothing(ws):
    proc, ev = start_server(ws, "serve-a", env={"SESSREC_API_KEY": KEY})
    try:
        assert ev["type"] == "serving" and ev["run_id"] == "serve-a" and ev["api_key_required"]
        url, hdr = ev["url"], {"X-API-Key": KEY}
        stop, failures, served_by = threading.Event(), [], set()

        def load() -> None:
            with httpx.Client(base_url=url, headers=hdr, timeout=30) as c:
                while not stop.is_set():
                    try:
                        r = c.post("/recommend", json={"session_items": [1, 2, 3], "k": 10})
                        if r.status_code != 200:
                            failures.append(r.status_code)
                        else:
                            served_by.add(r.json()["run_id"])
                    except httpx.HTTPError as e:
                        failures.append(repr(e))
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        with httpx.Client(base_url=url, headers=hdr, timeout=30) as c:
            for target in ("serve-b", "serve-a", "serve-b"):
                assert c.post("/admin/reload", json={"target": target}).status_code == 202
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    h = c.get("/health").json()
                    if h["reload"]["state"] == "idle" and h["run_id"] == target:
                        break
                    time.sleep(0.05)
                assert h["run_id"] == target
            os.kill(proc.pid, signal.SIGHUP)          # reload the run in service from its checkpoint
            deadline = time.monotonic() + 60
            while metric(c.get("/metrics").text, "sessrec_reloads_total", result="ok") < 4:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            text = c.get("/metrics").text
        stop.set()
        for t in threads:
            t.join()
        assert failures == [] and served_by == {"serve-a", "serve-b"}
        assert metric(text, "sessrec_requests_total", endpoint="/recommend", status="200") > 20
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        kill_group(proc)


def test_a_bad_target_or_an_open_address_without_key_fail_before_listening(ws, capsys):
    from engine.cli import main as cli
    for args, message in ((["nope"], "not found"), (["serve-a", "--host", "0.0.0.0"], "API key"),
                          (["baseline:sknn"], "baseline:NAME@DATASET"), (["serve-a", "--threads", "0"], "--threads")):
        assert cli(["--workspace", str(ws.root), "serve", *args, "--port", "0"]) == 2
        assert message in capsys.readouterr().err


def test_the_onnx_runtime_answers_what_torch_answers(ws, slot, ids):
    onnx_slot = make_slot(ws, ServeOptions(target="serve-a", runtime="onnx", search="exact"))
    c = TestClient(create_app(onnx_slot))
    assert c.get("/health").json()["runtime"] == "onnx"
    sessions = [[ids[3], ids[5], ids[3]], [ids[0]], list(ids)]
    got = c.post("/recommend/batch", json={"sessions": sessions, "k": 10}).json()["results"]
    for s, g in zip(sessions, got):
        want = slot.current.rec.recommend(s, 10)
        assert g["items"] == want.items and np.allclose(g["scores"], want.scores, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="torch runtime only"):
        make_slot(ws, ServeOptions(target="baseline:sknn@demo-tiny", runtime="onnx"))


def test_the_engine_runs_without_the_serving_packages(ws):
    """A bare GPU box has torch but not fastapi, onnx or faiss: training and recommending import
    without them, and `serve` says what to install."""
    script = r'''
import sys
for name in ("fastapi", "uvicorn", "starlette", "onnx", "onnxruntime", "onnxscript", "faiss", "prometheus_client"):
    sys.modules[name] = None      # `import name` raises ImportError, find_spec(name) is None
import engine.inference.recommend, engine.train.loop, engine.serve.server, engine.export.onnx_runtime  # noqa
from engine.cli import main
rec = engine.inference.recommend.Recommender.for_target(engine.core.workspace.Workspace.open(sys.argv[1]), "serve-a")
assert len(rec.recommend(rec.items.raw_ids[:2].tolist(), 5).items) == 5
sys.exit(main(["--workspace", sys.argv[1], "serve", "serve-a", "--port", "0"]))
'''
    proc = subprocess.run([sys.executable, "-c", script, str(ws.root)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    assert "serving needs fastapi, uvicorn, prometheus_client" in proc.stderr


def test_several_workers_share_metrics_and_reload_together(ws):
    proc, ev = start_server(ws, "serve-a", "--workers", "2", env={"SESSREC_API_KEY": KEY})
    try:
        assert ev["workers"] == 2
        with httpx.Client(base_url=ev["url"], headers={"X-API-Key": KEY}, timeout=30) as c:
            for _ in range(12):
                assert c.post("/recommend", json={"session_items": [1, 2]}).status_code == 200
            text = c.get("/metrics").text
            # summed over the workers' files, whichever worker answers the scrape
            assert metric(text, "sessrec_requests_total", endpoint="/recommend", status="200") == 12
            assert c.post("/admin/reload", json={"target": "serve-b"}).status_code == 202
            deadline = time.monotonic() + 120
            while {c.post("/recommend", json={"session_items": [1]}).json()["run_id"] for _ in range(8)} != {"serve-b"}:
                assert time.monotonic() < deadline          # every worker answers with the new run
                time.sleep(0.2)
            assert metric(c.get("/metrics").text, "sessrec_reloads_total", result="ok") >= 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        kill_group(proc)
