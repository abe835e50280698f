"""The FastAPI application of `sessrec serve`.

    GET  /health             liveness and what is served (no API key needed)
    POST /recommend          top-k for one session of raw item ids
    POST /recommend/batch    top-k for up to MAX_BATCH_SESSIONS sessions
    GET  /metrics            Prometheus text
    POST /feedback           a click, add-to-cart or purchase of a listed item (A/B servers)
    POST /admin/reload       load the newest best checkpoint (or another run) and swap it in
    POST /admin/arms         A/B servers: a new split (a new phase of the experiment)
    GET  /docs               the OpenAPI schema, browsable

On an A/B server (`arms`, engine.serve.arms) a request's `session_id` picks its arm, the response
names it, and every served list is queued for the impression log (written by a background thread).

Every error is JSON `{"error": "..."}` (a 422 adds `detail`, one entry per refused field), each
documented in the OpenAPI schema with its model; unknown item ids are reported, never an error. A
lone small request is scored on the event loop itself; the others go to the model's scoring thread,
which batches whatever queued up (`engine.serve.batcher`). One pure ASGI
middleware enforces the body limit and the API key, records the metrics (cheaper per request than
Starlette's BaseHTTPMiddleware) and serves the recommendation endpoints past FastAPI's request
machinery (`engine.serve.endpoints`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from engine import __version__
from engine.core.errors import InputError
from engine.inference.rules import Rules
from engine.serve.arms import ArmSet
from engine.serve.endpoints import (
    JsonEndpoint,
    RequestError,
    field_error,
    internal_error,
    send_json,
    serve_json,
    validation_error,
)
from engine.serve.metrics import Metrics
from engine.serve.openapi import as_openapi_30
from engine.serve.schemas import (
    MAX_BATCH_SESSIONS,
    MAX_BODY_BYTES,
    ArmsRequest,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    RecommendRequest,
    RecommendResponse,
    ReloadAccepted,
    ReloadBusy,
    ReloadRequest,
    ValidationErrorResponse,
)
from engine.serve.security import KEY_HEADER, key_matches
from engine.serve.slot import ModelSlot, ReloadBroadcast

ENDPOINTS = ("/health", "/recommend", "/recommend/batch", "/feedback", "/metrics", "/admin/reload",
             "/admin/arms", "/docs", "/openapi.json")
OPEN = ("/health",)                       # no key needed
# a request of at most this many sessions, alone in flight, is scored on the event loop (a few ms);
# bigger ones go to the scoring thread, so the loop keeps answering /health and /metrics meanwhile
INLINE_MAX_SESSIONS = 8


@dataclass
class ServeSettings:
    api_key: str | None = None
    admin_key: str | None = None                 # opens /admin/* only (see engine.serve.security)
    max_body_bytes: int = MAX_BODY_BYTES
    broadcast: ReloadBroadcast | None = None     # several workers: reloads go through this file


class Guard:
    """ASGI middleware: body size limit, API key, metrics; dispatches the plain JSON endpoints."""

    def __init__(self, app, settings: ServeSettings, metrics: Metrics,
                 endpoints: dict[str, JsonEndpoint] | None = None,
                 methods: dict[str, tuple[str, ...]] | None = None) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics
        self.endpoints = endpoints or {}          # served here, past the FastAPI app
        self.methods = methods or {}              # path -> the methods its routes answer

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        status_box = [500]
        replied = [False]          # the guard answered (body too large): drop what the app sends

        async def send_tracked(msg) -> None:
            if replied[0]:
                return
            if msg["type"] == "http.response.start":
                status_box[0] = msg["status"]
            await send(msg)

        limit = self.settings.max_body_bytes
        seen = [0]

        async def receive_limited():
            msg = await receive()
            if msg["type"] == "http.request":
                seen[0] += len(msg.get("body", b""))
                if seen[0] > limit:           # chunked bodies have no Content-Length to check first
                    await send_json(send_tracked, 413, {"error": f"request body over {limit} bytes"})
                    replied[0] = True
                    return {"type": "http.disconnect"}
            return msg

        try:
            allowed = self.methods.get(path)
            if allowed is not None and scope["method"] not in allowed:
                # before the key check: the method is wrong whoever asks (RFC 9110: a 405 names the
                # methods in `Allow`; the plain endpoints and the key refusals would not)
                await send_json(send_tracked, 405, {"error": f"method {scope['method']} not allowed: use "
                                                             f"{' or '.join(allowed)}"},
                                ((b"allow", ", ".join(allowed).encode()),))
                return
            refusal = self._refuse(scope, path)
            if refusal:
                await send_json(send_tracked, *refusal)
                return
            plain = self.endpoints.get(path)
            if plain is not None:
                await serve_json(plain, scope, receive_limited, send_tracked)
            else:
                await self.app(scope, receive_limited, send_tracked)
        finally:
            self.metrics.requests.labels(endpoint, str(status_box[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    def _refuse(self, scope, path: str) -> tuple[int, dict] | None:
        key = self.settings.api_key
        if path.startswith("/admin/"):
            keys = [k for k in (key, self.settings.admin_key) if k]
            if not keys:
                return 403, {"error": "admin endpoints need a key: start the server with --api-key, "
                                      "SESSREC_API_KEY or SESSREC_ADMIN_KEY (or reload it with SIGHUP)"}
            # every key is compared (constant time each), whichever matches
            if not sum(key_matches(scope["headers"], k) for k in keys):
                return 401, {"error": "missing or wrong API key (header X-API-Key)"}
        elif key and path not in OPEN and not key_matches(scope["headers"], key):
            return 401, {"error": "missing or wrong API key (header X-API-Key)"}
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.settings.max_body_bytes
                except ValueError:
                    return 400, {"error": "Content-Length is not a number"}
                if too_big:
                    return 413, {"error": f"request body over {self.settings.max_body_bytes} bytes"}
        return None


def create_app(slot: ModelSlot, settings: ServeSettings | None = None, metrics: Metrics | None = None,
               arms: ArmSet | None = None):
    """The app over one model (`slot`) or, with `arms`, an A/B experiment (then `slot` is the first
    arm's, which /health describes at its top level)."""
    from fastapi import Body, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    settings = settings or ServeSettings()
    metrics = metrics or Metrics()
    started = time.monotonic()
    metrics.set_model(slot.current.rec)
    if arms is None:
        slot._on_reload = metrics.reloaded
    else:
        arms.on_reload = lambda arm, ok, rec: metrics.reloaded(ok, rec, arm)
        for name, s in arms.slots.items():
            metrics.set_arm(name, s.current.rec)
    app = FastAPI(title="sessrec", version=__version__,
                  description="Next-item recommendations for anonymous sessions from a sessrec run.")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(validation_error(list(exc.errors())), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # its headers too: a 405 carries `Allow` (RFC 9110), which the handler dropped
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):      # a bug: a JSON 500, never a crash
        return JSONResponse(internal_error(exc), status_code=500)

    def info(served) -> dict[str, Any]:
        return {"model": served.rec.meta.get("model", ""), "run_id": served.rec.meta.get("run_id")}

    def options(req) -> tuple[Rules | None, bool]:
        """The request's business rules (None: none) and whether it asks for explanations."""
        rules = Rules.of(req.exclude, req.only_available, req.categories, req.boost_categories, float(req.boost))
        return (None if rules.empty else rules), req.explain

    async def answer(sessions: list[list[int]], k: int, exclude: bool, on: ModelSlot = slot,
                     opts: tuple[Rules | None, bool] = (None, False)):
        try:
            return await _answer(sessions, k, exclude, on, opts)
        except InputError as e:           # a rule the served model's dataset cannot apply
            raise field_error("body", str(e)) from None

    async def _answer(sessions: list[list[int]], k: int, exclude: bool, on: ModelSlot,
                      opts: tuple[Rules | None, bool]):
        served = on.acquire()
        try:
            t0 = time.perf_counter()
            small = len(sessions) <= INLINE_MAX_SESSIONS
            if small:       # let the requests read in the same pass of the loop acquire() too
                await asyncio.sleep(0)
            if small and served.inflight == 1:
                # alone: scored here, on the event loop. Handing it to the scoring thread and the
                # answer back costs two thread wake-ups, ~0.5 ms of a 5 ms request on the 2-core dev
                # CPU; nothing else is in flight to batch with or to keep waiting
                recs = served.rec.recommend_many(sessions, k, exclude, *opts)
            else:
                recs = await asyncio.wrap_future(served.batcher.submit(sessions, k, exclude, opts))
            return recs, info(served), (time.perf_counter() - t0) * 1000, served.target
        finally:
            on.release(served)

    def one(r, arm: str | None = None) -> dict:
        return {"items": r.items, "scores": r.scores, "unknown_items": r.unknown, "fallback": r.fallback,
                "arm": arm, "info": r.info, "explanations": r.explanations}

    def need_ids(given, field: str):
        if given is None:
            raise field_error(field, "required: this server runs an A/B experiment (the id picks the arm)")
        return given

    async def answer_arms(ids: list[str], sessions: list[list[int]], k: int, exclude: bool,
                          opts: tuple[Rules | None, bool] = (None, False)):
        """Each session on its session id's arm (one scoring pass per arm), every list logged as an
        impression; (recommendations, arms, model infos) in the order given."""
        t = time.time()
        groups: dict[str, tuple[int, ModelSlot, list[int]]] = {}
        for i, sid in enumerate(ids):
            phase, arm, on = arms.route(sid)
            groups.setdefault(arm, (phase, on, []))[2].append(i)
        recs: list = [None] * len(ids)
        names: list = [None] * len(ids)
        whos = []
        for arm, (phase, on, idx) in groups.items():
            metrics.arm_requests.labels(arm).inc(len(idx))
            got, who, _, target = await answer([sessions[i] for i in idx], k, exclude, on, opts)
            whos.append(who)
            for i, r in zip(idx, got):
                recs[i], names[i] = r, arm
                arms.impression(phase, arm, ids[i], target, r.items, k, len(sessions[i]), t)
        return recs, names, whos

    # The errors each route can answer, documented as this server answers them: the guard's 400 and 413
    # on every path (a Content-Length that is no number or over the limit), its 401 where this server
    # asks for a key, the 422 of a body, and /admin/reload's own.
    said = {400: ("Content-Length is not a number", ErrorResponse),
            401: ("missing or wrong API key (header X-API-Key, or Authorization: Bearer)", ErrorResponse),
            403: ("admin endpoints need a key, and this server has none", ErrorResponse),
            409: ("a reload is already running", ReloadBusy),
            413: (f"request body over {settings.max_body_bytes} bytes", ErrorResponse),
            422: ("the body is no JSON or a field of it was refused (each one in `detail`)",
                  ValidationErrorResponse)}

    def errors(*codes: int | None, text: bool = False) -> dict[int | str, dict[str, Any]]:
        # a text route's errors by reference: FastAPI documents a `model` in the route's own media type
        def body(model) -> dict[str, Any]:
            ref = {"$ref": f"#/components/schemas/{model.__name__}"}
            return {"content": {"application/json": {"schema": ref}}} if text else {"model": model}
        return {c: {**body(said[c][1]), "description": said[c][0]} for c in sorted(c for c in codes if c)}

    keyed = 401 if settings.api_key else None
    admin = 401 if (settings.api_key or settings.admin_key) else 403
    busy = 409 if settings.broadcast is None else None          # a broadcast reload is never refused

    @app.get("/health", response_model=Health, responses=errors(400, 413))
    async def health():
        rec = slot.current.rec
        return {"status": "ok", "model": rec.meta.get("model", ""), "run_id": rec.meta.get("run_id"),
                "dataset": rec.meta.get("dataset", ""), "n_items": rec.items.n_items,
                "runtime": rec.meta.get("runtime", "torch"), "device": str(rec.device),
                "search": rec.search_info(), "version": __version__,
                "uptime_s": round(time.monotonic() - started, 3), "reload": slot.state,
                "experiment": arms.info() if arms is not None else None}

    # FastAPI routes (documented from these models, and answering when the guard does not), and the
    # hot path served past FastAPI's request machinery by the guard (see engine.serve.endpoints); the
    # answers are built from typed values and sent as they are (the tests check them against the
    # response models)
    @app.post("/recommend", response_model=RecommendResponse, summary="Top-k next items for one session",
              responses=errors(400, keyed, 413, 422))
    async def recommend(req: RecommendRequest) -> dict:
        if arms is None:
            recs, who, ms, _ = await answer([req.session_items], req.k, req.exclude_session_items, opts=options(req))
            return {**one(recs[0]), **who, "latency_ms": round(ms, 3)}
        t0 = time.perf_counter()
        sid = need_ids(req.session_id, "session_id")
        recs, names, whos = await answer_arms([sid], [req.session_items], req.k, req.exclude_session_items,
                                              options(req))
        return {**one(recs[0], names[0]), **whos[0], "latency_ms": round((time.perf_counter() - t0) * 1000, 3)}

    @app.post("/recommend/batch", response_model=BatchResponse,
              summary=f"Top-k next items for up to {MAX_BATCH_SESSIONS} sessions",
              responses=errors(400, keyed, 413, 422))
    async def recommend_batch(req: BatchRequest) -> dict:
        if arms is None:
            recs, who, ms, _ = await answer(req.sessions, req.k, req.exclude_session_items, opts=options(req))
            return {"results": [one(r) for r in recs], **who, "latency_ms": round(ms, 3)}
        t0 = time.perf_counter()
        ids = need_ids(req.session_ids, "session_ids")
        if len(ids) != len(req.sessions):
            raise field_error("session_ids", f"{len(ids)} ids for {len(req.sessions)} sessions: one per session")
        recs, names, whos = await answer_arms(ids, req.sessions, req.k, req.exclude_session_items, options(req))
        runs = {w["run_id"] for w in whos}
        return {"results": [one(r, a) for r, a in zip(recs, names)],
                "model": "+".join(dict.fromkeys(w["model"] for w in whos)),
                "run_id": runs.pop() if len(runs) == 1 else None,
                "latency_ms": round((time.perf_counter() - t0) * 1000, 3)}

    no_experiment = {409: {"model": ErrorResponse, "description": "this server runs no A/B experiment"}}

    @app.post("/feedback", response_model=FeedbackResponse, status_code=202,
              summary="An event on a recommended item (A/B servers): click, addtocart or transaction",
              responses={**errors(400, keyed, 413, 422), **no_experiment})
    async def feedback(req: FeedbackRequest) -> dict:
        if arms is None:
            raise RequestError(409, {"error": "this server runs no A/B experiment (start it with --arm): "
                                              "feedback is not recorded"})
        phase, arm = arms.feedback(req.session_id, req.item, req.event)
        metrics.feedback.labels(arm, req.event).inc()
        return {"accepted": True, "arm": arm, "phase": phase}

    endpoints = {"/recommend": JsonEndpoint(RecommendRequest, recommend),
                 "/recommend/batch": JsonEndpoint(BatchRequest, recommend_batch),
                 "/feedback": JsonEndpoint(FeedbackRequest, feedback, status=202)}

    @app.get("/metrics", response_class=PlainTextResponse, responses=errors(400, keyed, 413, text=True),
             summary="Prometheus metrics (text exposition format)")
    async def metrics_text():
        body, ctype = metrics.exposition()
        return Response(body, media_type=ctype)

    @app.post("/admin/reload", status_code=202, response_model=ReloadAccepted,
              summary="Load the newest best checkpoint (or another run) and swap it in",
              responses=errors(400, admin, busy, 413, 422))
    async def reload(req: ReloadRequest | None = Body(None)):
        target = req.target if req else None
        if arms is not None:
            try:
                on = arms.slot(req.arm if req else None)
            except InputError as e:
                raise field_error("arm", f"{e}: this server runs an A/B experiment") from None
            if not on.reload(target):
                return JSONResponse({"error": f"arm {req.arm} is already reloading", "reload": on.state},
                                    status_code=409)
            return {"accepted": True, "reload": on.state}
        if settings.broadcast is not None:          # every worker (this one too) reloads from the file
            # the target by name: a worker started later (uvicorn restarts lost ones) loads it too
            settings.broadcast.request(target or slot.current.target)
            return {"accepted": True, "reload": slot.state}
        if not slot.reload(target):
            return JSONResponse({"error": "a reload is already running", "reload": slot.state}, status_code=409)
        return {"accepted": True, "reload": slot.state}

    @app.post("/admin/arms", summary="A/B servers: a new split, which starts a new phase",
              responses={**errors(400, admin, 413, 422), **no_experiment})
    async def set_arms(req: ArmsRequest) -> dict:
        if arms is None:
            raise RequestError(409, {"error": "this server runs no A/B experiment (start it with --arm)"})
        try:
            phase = arms.experiment.reweight(req.split)
        except InputError as e:
            raise field_error("split", str(e)) from None
        return {"phase": phase, "experiment": arms.info()}

    def openapi() -> dict[str, Any]:
        """FastAPI's schema as OpenAPI 3.0.3 (whose integers are what the server takes, see
        engine.serve.openapi), plus the API key where this server asks for one (the guard checks it,
        so FastAPI cannot know)."""
        if app.openapi_schema is None:
            schema = as_openapi_30(get_openapi(title=app.title, version=app.version,
                                               description=app.description, routes=app.routes))
            locked = [p for p in schema["paths"] if p not in OPEN and
                      (settings.api_key or (p.startswith("/admin/") and settings.admin_key))]
            if locked:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "ApiKey": {"type": "apiKey", "in": "header", "name": KEY_HEADER},
                    "Bearer": {"type": "http", "scheme": "bearer"}}
                for p in locked:
                    for op in schema["paths"][p].values():
                        op["security"] = [{"ApiKey": []}, {"Bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # what each path answers, from the routes themselves (HEAD where Starlette adds it: /docs, ...)
    methods: dict[str, set[str]] = {}
    for route in app.routes:
        methods.setdefault(route.path, set()).update(getattr(route, "methods", None) or ())
    app.add_middleware(Guard, settings=settings, metrics=metrics, endpoints=endpoints,
                       methods={p: tuple(sorted(m)) for p, m in methods.items() if m})
    return app
