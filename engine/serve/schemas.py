"""Request and response bodies of the service. Limits live here, once; the OpenAPI schema at /docs
is generated from these models."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.data.items import INT64_MAX, INT64_MIN

MAX_K = 100
MAX_SESSION_ITEMS = 1000          # longer sessions: the last clicks matter, send those
MAX_BATCH_SESSIONS = 256
MAX_BODY_BYTES = 1 << 20          # 1 MiB: a full batch of full sessions of 20-digit ids fits

ItemId = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX, description="raw item id (64-bit integer)")]
SessionId = Annotated[str, Field(min_length=1, max_length=128, description="the client's id of the browsing "
                                 "session; on an A/B server its hash picks the arm (sticky)")]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_items: list[ItemId] = Field(..., min_length=1, max_length=MAX_SESSION_ITEMS,
                                        description="raw item ids of the session, oldest first")
    k: int = Field(10, ge=1, le=MAX_K, description="number of items to return")
    exclude_session_items: bool = Field(False, description="never return an item already in the session")
    session_id: SessionId | None = Field(None, description="required on an A/B server (--arm): picks the "
                                         "arm and is logged with the impression")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sessions: list[Annotated[list[ItemId], Field(min_length=1, max_length=MAX_SESSION_ITEMS)]] = Field(
        ..., min_length=1, max_length=MAX_BATCH_SESSIONS, description="sessions of raw item ids, oldest first")
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_session_items: bool = False
    session_ids: list[SessionId] | None = Field(None, max_length=MAX_BATCH_SESSIONS,
                                                description="one per session; required on an A/B server")

    @model_validator(mode="after")
    def _one_id_per_session(self) -> "BatchRequest":
        if self.session_ids is not None and len(self.session_ids) != len(self.sessions):
            raise ValueError(f"session_ids: {len(self.session_ids)} ids for {len(self.sessions)} sessions")
        return self


class Recommendation(BaseModel):
    items: list[int] = Field(description="raw item ids, best first")
    scores: list[float]
    unknown_items: list[int] = Field(description="input ids the model does not know (ignored)")
    fallback: bool = Field(description="no known input id: the training popularity ranking answered")
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
    model_config = ConfigDict(extra="forbid")
    session_id: SessionId
    item: ItemId = Field(description="the raw item id the event is about")
    event: Literal["click", "addtocart", "transaction"]


class FeedbackResponse(BaseModel):
    accepted: bool
    arm: str
    phase: int


class ArmsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: list[Annotated[float, Field(ge=0, le=1e6)]] = Field(..., min_length=1, max_length=16,
                                                                  description="one weight per arm, in order")


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str | None = Field(None, max_length=200, description="a run id or baseline:NAME@DATASET; "
                               "null: the run in service, from its newest best checkpoint")
    arm: str | None = Field(None, max_length=16, description="A/B server: the arm to reload (required there)")


class ReloadState(BaseModel):
    state: str = Field(description="idle | loading | failed")
    target: str | None = None
    error: str | None = None
    finished_at: str | None = None


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
