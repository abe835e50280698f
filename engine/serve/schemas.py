"""Request and response bodies of the service. Limits live here, once; the OpenAPI schema at /docs
is generated from these models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from engine.data.items import ITEM_ID_MAX, ITEM_ID_MIN

MAX_K = 100
MAX_SESSION_ITEMS = 1000          # longer sessions: the last clicks matter, send those
MAX_BATCH_SESSIONS = 256
MAX_RULE_ITEMS = 1000            # excluded items or categories of one request
MAX_BOOST = 1000.0
MAX_BODY_BYTES = 1 << 20          # 1 MiB: a full batch of full sessions of 20-digit ids fits

# What a number in a request is: a JSON integer written without a fraction or an exponent. Never a
# boolean (true), a string ("5") or a float (263.0, 263.5), all of which pydantic's lax mode turned into
# ints: StrictInt refuses them ("Input should be a valid integer", type int_type, naming the field).
# OpenAPI 3.0's `integer` means exactly this (3.1's also takes 263.0): see engine.serve.openapi.
# The id bound is written as `lt=2**63`: FastAPI's OpenAPI models hold bounds as floats, where 2**63 - 1
# would print as 9.223372036854776e+18, i.e. 2**63, an id the server refuses; 2**63 is a float exactly.
ItemId = Annotated[StrictInt, Field(
    ge=ITEM_ID_MIN, lt=ITEM_ID_MAX + 1, json_schema_extra={"format": "int64"},
    description=f"raw item id: a JSON integer from {ITEM_ID_MIN} to {ITEM_ID_MAX} (never a string, a "
                f"boolean or a number with a decimal point)")]
K = Annotated[StrictInt, Field(ge=1, le=MAX_K, description="number of items to return (a JSON integer)")]
_FORBID = ConfigDict(extra="forbid")
SessionId = Annotated[StrictStr, Field(min_length=1, max_length=128, description="the client's id of the "
                                       "browsing session; on an A/B server its hash picks the arm (sticky)")]


CategoryId = Annotated[StrictInt, Field(ge=0, lt=ITEM_ID_MAX + 1, json_schema_extra={"format": "int64"},
                                        description="a category id of the item metadata")]


class Rules(BaseModel):
    """Business rules, applied to the whole catalogue before the top-k (k items whenever k are
    eligible); the last four need the dataset's item metadata (`sessrec data items`)."""
    exclude: list[ItemId] = Field([], max_length=MAX_RULE_ITEMS, description="raw item ids never returned")
    only_available: StrictBool = Field(False, description="leave out items whose latest availability is 0")
    categories: list[CategoryId] = Field([], max_length=MAX_RULE_ITEMS,
                                         description="only items with one of these categories on their path")
    boost_categories: list[CategoryId] = Field([], max_length=MAX_RULE_ITEMS,
                                               description="items with one of these on their path get `boost` added")
    # StrictFloat takes JSON integers too (never a boolean or a string); one type, so the schema's bounds are its
    boost: StrictFloat = Field(1.0, ge=-MAX_BOOST, le=MAX_BOOST,
                               description="score added to boosted items (the model's score scale)")
    explain: StrictBool = Field(False, description="add each item's evidence (`explanations`)")


class RecommendRequest(Rules):
    model_config = _FORBID
    session_items: list[ItemId] = Field(..., min_length=1, max_length=MAX_SESSION_ITEMS,
                                        description="raw item ids of the session, oldest first")
    k: K = 10
    exclude_session_items: StrictBool = Field(False, description="never return an item already in the session")
    session_id: SessionId | None = Field(None, description="required on an A/B server (--arm): picks the "
                                         "arm and is logged with the impression")


class BatchRequest(Rules):
    """The rules and `explain` apply to every session of the batch."""
    model_config = _FORBID
    sessions: list[Annotated[list[ItemId], Field(min_length=1, max_length=MAX_SESSION_ITEMS)]] = Field(
        ..., min_length=1, max_length=MAX_BATCH_SESSIONS, description="sessions of raw item ids, oldest first")
    k: K = 10
    exclude_session_items: StrictBool = False
    session_ids: list[SessionId] | None = Field(None, max_length=MAX_BATCH_SESSIONS,
                                                description="one per session, in order; required (and "
                                                            "only read) on an A/B server")


class ErrorResponse(BaseModel):
    """The body of every error the service answers (4xx, and a 500 for a bug)."""
    model_config = _FORBID
    error: str = Field(description="what went wrong, in one line (for a 422: `field: message`, up to 5 fields)")


class FieldError(BaseModel):
    model_config = _FORBID
    field: str = Field(description="where, from the request's root: body.session_items.3, body.k, body")
    message: str = Field(description="what was expected there: Input should be a valid integer, ...")
    type: str = Field(description="pydantic's error type: int_type, less_than_equal, missing, extra_forbidden, ...")


class ValidationErrorResponse(ErrorResponse):
    """422: the body is no JSON, or a field of it was refused."""
    detail: list[FieldError] = Field(description="each refused field (the first 20)")


class Recommendation(BaseModel):
    items: list[int] = Field(description="raw item ids, best first")
    scores: list[float]
    unknown_items: list[int] = Field(description="input ids the model does not know (ignored)")
    fallback: bool = Field(description="no known input id: the training popularity ranking answered")
    info: list[dict[str, Any]] | None = Field(None, description="per item, when the dataset has item metadata: "
                                              "name, category, path (names from the root), price, available "
                                              "({} for an item without metadata)")
    explanations: list[dict[str, Any]] | None = Field(None, description="per item, with `explain`: the session "
                                                      "items that contributed most (contribution, share, "
                                                      "attention, cooc), repeat, neighbours, parts")
    arm: str | None = Field(None, description="the A/B arm that answered (null: no experiment)")


class RecommendResponse(Recommendation):
    model: str
    run_id: str | None
    latency_ms: float


class BatchResponse(BaseModel):
    results: list[Recommendation]
    model: str = Field(description="the model that answered (A/B: the models, joined by '+')")
    run_id: str | None
    latency_ms: float


class FeedbackRequest(BaseModel):
    model_config = _FORBID
    session_id: SessionId
    item: ItemId = Field(description="the raw item id the event is about")
    event: Literal["click", "addtocart", "transaction"]


class FeedbackResponse(BaseModel):
    accepted: bool
    arm: str
    phase: int


class ArmsRequest(BaseModel):
    model_config = _FORBID
    split: list[Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]] = Field(..., min_length=1, max_length=16,
                                                                  description="one weight per arm, in order")


class ReloadRequest(BaseModel):
    model_config = _FORBID
    target: StrictStr | None = Field(None, max_length=200, description="a run id or baseline:NAME@DATASET; "
                               "null: the run in service, from its newest best checkpoint")
    arm: StrictStr | None = Field(None, max_length=16, description="A/B server: the arm to reload (required there; "
                                "a server of one model ignores it)")


class ReloadState(BaseModel):
    state: str = Field(description="idle | loading | failed")
    target: str | None = None
    error: str | None = None
    finished_at: str | None = None


class ReloadAccepted(BaseModel):
    accepted: bool
    reload: ReloadState


class ReloadBusy(ErrorResponse):
    """409: a reload is already running (this one is not queued)."""
    reload: ReloadState


class Health(BaseModel):
    status: str
    model: str
    run_id: str | None
    dataset: str
    n_items: int
    runtime: str
    device: str
    search: dict
    version: str
    uptime_s: float
    reload: ReloadState
    experiment: dict | None = Field(None, description="A/B server: name, phase, arms (target, share, "
                                    "model, reload state) and lines logged")
