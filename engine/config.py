"""Frozen dataclass configs. Each dumps to JSON (manifest, run config) and loads back with checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from engine.errors import InputError

FORMATS = ("retailrocket", "rsc15", "diginetica")
SPLIT_MODES = ("ratio", "days", "test_file")

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build `cls` from a dict, rejecting unknown keys with the list of valid ones."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; "
                         f"valid fields: {', '.join(sorted(names))}")
    return cls(**data)


def stable_hash(obj: Any) -> str:
    """Short content hash of a JSON-able object (sorted keys), used for cache keys."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


@dataclass(frozen=True)
class DataConfig:
    """Parameters of the data pipeline (raw log -> sessions -> split -> items -> graph -> PE)."""

    format: str = "retailrocket"
    # sessionize
    session_gap_minutes: float = 30.0   # a gap of more than this starts a new session
    min_session_length: int = 3         # shorter sessions are dropped
    max_session_length: int = 50        # longer sessions keep their last events
    min_item_support: int = 1           # items seen fewer times (whole log) are dropped first
    # split
    split_mode: str = "ratio"           # ratio | days (last test_days are test) | test_file
    train_ratio: float = 0.70
    val_ratio: float = 0.15             # test is the rest; with days/test_file: share of train kept as val
    blackout_days: float = 2.0          # sessions starting this long after a cut point are dropped
    test_days: float = 7.0              # split_mode=days
    # graph
    cooc_window: int = 5                # positions i<j with j-i <= window are linked
    # encodings
    pe_dim: int = 16

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"format: unknown {self.format!r}; expected one of {', '.join(FORMATS)}")
        if self.split_mode not in SPLIT_MODES:
            raise InputError(f"split_mode: unknown {self.split_mode!r}; "
                             f"expected one of {', '.join(SPLIT_MODES)}")
        checks = [
            (self.session_gap_minutes > 0, "session_gap_minutes must be > 0"),
            (self.min_session_length >= 2, "min_session_length must be >= 2 (a session needs a target)"),
            (self.max_session_length >= self.min_session_length,
             "max_session_length must be >= min_session_length"),
            (self.min_item_support >= 1, "min_item_support must be >= 1"),
            (0 < self.train_ratio < 1, "train_ratio must be in (0, 1)"),
            (0 <= self.val_ratio < 1, "val_ratio must be in [0, 1)"),
            (self.split_mode != "ratio" or self.train_ratio + self.val_ratio < 1,
             "train_ratio + val_ratio must be < 1 (test is the rest)"),
            (self.blackout_days >= 0, "blackout_days must be >= 0"),
            (self.test_days > 0, "test_days must be > 0"),
            (self.cooc_window >= 1, "cooc_window must be >= 1"),
            (self.pe_dim >= 1, "pe_dim must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(f"data config: {msg}")

    @property
    def has_session_ids(self) -> bool:
        """Formats whose rows already carry a session id (sessionize keeps them)."""
        return self.format in ("rsc15", "diginetica")


DEVICES = ("auto", "cpu", "cuda")
LOSSES = ("ce", "sampled", "bpr")
EXAMPLE_MODES = ("prefixes", "last")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """How a run trains and evaluates. Model hyperparameters live in `model_params` (see registry)."""

    dataset: str = "demo"
    model: str = "graph_transformer"
    model_params: dict = dataclasses.field(default_factory=dict)  # resolved, complete
    epochs: int = 20
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200             # linear warm-up, then `schedule` decay to 0 at the last step
    schedule: str = "cosine"
    grad_clip: float = 1.0
    loss: str = "ce"                    # ce (full softmax) | sampled (in-batch + uniform, logQ) | bpr
    negatives: int = 256                # sampled: uniform negatives per batch; bpr: per example
    examples: str = "prefixes"          # prefixes: every next item; last: one per session (reference)
    val_protocol: str = "prefixes"      # protocol whose Recall@10 drives early stopping
    patience: int = 3                   # epochs without val Recall@10 improvement before stopping
    device: str = "auto"
    bf16: bool = True                   # autocast to bfloat16 on CUDA (ignored on CPU)
    compile: bool = False               # torch.compile the model
    seed: int = 0
    eval_batch_size: int = 1024
    num_threads: int = 0                # CPU threads for torch (0: torch's default)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch size must be >= 1"),
            (self.eval_batch_size >= 1, "eval batch size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight decay must be >= 0"),
            (self.warmup_steps >= 0, "warmup steps must be >= 0"),
            (self.grad_clip >= 0, "grad clip must be >= 0 (0 = off)"),
            (self.negatives >= 1, "negatives must be >= 1"),
            (self.patience >= 1, "patience must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(f"train config: {msg}")
        for value, valid, what in ((self.device, DEVICES, "device"), (self.loss, LOSSES, "loss"),
                                   (self.examples, EXAMPLE_MODES, "examples"),
                                   (self.val_protocol, EXAMPLE_MODES, "val protocol"),
                                   (self.schedule, SCHEDULES, "schedule")):
            if value not in valid:
                raise InputError(f"unknown {what} {value!r}; expected one of {', '.join(valid)}")
