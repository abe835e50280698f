"""Typed configs, each field defined once: the pipeline's `DataConfig`, a run's `TrainConfig`, and one
config per model family (like nanoGPT's GPTConfig). Command-line flags (`engine/cli/flags.py`) and
the app's form fields (`tui/forms.py`) are generated from these classes: a field's name is its
name everywhere (config.json, manifest.json, checkpoints, `--flag-name`, the form), and its type,
choices, default, CPU preset, bounds and help text come from here.

    hidden: int = param(256, "hidden size", cpu=128, min=1)

Every config is a frozen dataclass; building one validates it (`InputError` naming the field and
what was expected), so a bad value is refused before any work starts. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import typing
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, Mapping, TypeVar

from engine.core.argv import flag_name
from engine.core.errors import InputError
from engine.core.mapping import parse_mapping
from engine.core.schema import (
    DataFormat,
    Device,
    EventType,
    GraphMode,
    LogRole,
    Loss,
    Protocol,
    Readout,
    Schedule,
    SplitMode,
    TimeFormat,
    Weighting,
    values,
)

T = TypeVar("T", bound="Config")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def param(default: Any, help: str, *, cpu: Any = dataclasses.MISSING, min: float | None = None,
          max: float | None = None, min_open: bool = False, max_open: bool = False,
          cli: bool = True) -> Any:
    """A config field: default, help text, optional CPU preset and bounds (inclusive unless
    `min_open` / `max_open`). `cli=False`: not a generated flag (set by the command itself)."""
    meta = {"help": help, "min": min, "max": max, "min_open": min_open, "max_open": max_open, "cli": cli}
    if cpu is not dataclasses.MISSING:
        meta["cpu"] = cpu
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamSpec:
    """One field of a config as the CLI and the app see it."""

    name: str
    type: type                   # int | float | bool | str | a StrEnum | dict
    default: Any
    help: str
    cpu: Any = None              # the CPU preset (None: the default holds on every device)
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    cli: bool = True

    @property
    def flag(self) -> str:
        return flag_name(self.name)

    @property
    def choices(self) -> tuple[str, ...] | None:
        return tuple(m.value for m in self.type) if _is_enum(self.type) else None

    def default_for(self, device_type: str = "cpu") -> Any:
        return self.cpu if self.cpu is not None and device_type != Device.CUDA else self.default

    @property
    def kind(self) -> str:
        """What the value is, in words (for messages and form hints)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return {bool: "true or false", int: "a whole number", float: "a number"}.get(self.type, "text")

    def bounds(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '>='} {_num(self.min)}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {_num(self.max)}")
        return " and ".join(parts)

    def parse(self, value: Any) -> Any:
        """`value` (typed, or text from a flag or a form) as this field's type, checked; InputError
        naming the field otherwise."""
        t = self.type
        try:
            if _is_enum(t):
                return t(value.strip() if isinstance(value, str) else value)
            if t is bool:
                if isinstance(value, bool):
                    return value
                if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
                    return value.strip().lower() in _TRUE
                raise ValueError
            if t is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                if isinstance(value, str) and len(value.strip()) > 30 and value.strip().lstrip("+-").isdigit():
                    # before int(): over 4,300 digits it raises ValueError, and no bound is that long
                    raise InputError(f"{self.name}: must be {self.bounds()} (got a number of "
                                     f"{len(value.strip()):,} characters)")
                v: Any = int(value.strip() if isinstance(value, str) else value)
            elif t is float:
                if isinstance(value, bool):
                    raise ValueError
                v = float(value.strip() if isinstance(value, str) else value)
                if not math.isfinite(v):
                    raise ValueError
            elif t is str:
                if not isinstance(value, str):
                    raise ValueError
                return value
            else:
                if not isinstance(value, t):
                    raise ValueError
                return value
        except (ValueError, TypeError, AttributeError):
            raise InputError(f"{self.name}: expected {self.kind}, got {_clip(repr(value))}") from None
        lo_bad = self.min is not None and (v <= self.min if self.min_open else v < self.min)
        hi_bad = self.max is not None and (v >= self.max if self.max_open else v > self.max)
        if lo_bad or hi_bad:
            raise InputError(f"{self.name}: must be {self.bounds()} (got {_clip(_num(v))})")
        return v


def _num(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _clip(text: str, n: int = 40) -> str:
    """A value as quoted in a message: `--epochs` of 200 nines is not repeated in full."""
    return text if len(text) <= n else f"{text[:20]}... ({len(text):,} characters)"


def _is_enum(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, enum.Enum)


class Config:
    """Base of every config dataclass: typed fields checked on construction, dict round trip."""

    def __post_init__(self) -> None:
        for spec in self.params():
            value = spec.parse(getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)      # enum members, ints as floats, ...
        self.check()

    def check(self) -> None:
        """Checks across fields (subclasses); raise InputError naming the fields."""

    @classmethod
    def params(cls) -> tuple[ParamSpec, ...]:
        return _params(cls)

    @classmethod
    def param(cls, name: str) -> ParamSpec:
        for p in cls.params():
            if p.name == name:
                return p
        raise KeyError(name)

    @classmethod
    def defaults(cls: type[T], device_type: str = "cpu") -> T:
        """The defaults, with the CPU preset unless the run goes to CUDA."""
        return cls(**{p.name: p.default_for(device_type) for p in cls.params() if p.cpu is not None})

    @classmethod
    def from_values(cls: type[T], values: Mapping[str, Any] | None = None, device_type: str = "cpu",
                    what: str | None = None) -> T:
        """The defaults (CPU preset unless on CUDA) updated by `values` (typed or text). Unknown
        names are an error listing the valid ones."""
        values = dict(values or {})
        names = [p.name for p in cls.params()]
        unknown = sorted(set(values) - set(names))
        if unknown:
            label = what or cls.__name__
            raise InputError(f"{label} has no parameter {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(names) or '(none)'}")
        base = {p.name: p.default_for(device_type) for p in cls.params()}
        return cls(**{**base, **{k: cls.param(k).parse(v) for k, v in values.items()}})

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        """Back from `to_dict` (config.json, manifest, checkpoint); unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise InputError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; "
                             f"valid fields: {', '.join(sorted(names))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))   # enums -> plain strings

    def changed(self, base: "Config") -> dict[str, Any]:
        """Fields whose value differs from `base` (what a user chose)."""
        return {p.name: getattr(self, p.name) for p in self.params()
                if getattr(self, p.name) != getattr(base, p.name)}


@cache
def _params(cls: type) -> tuple[ParamSpec, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        meta = f.metadata
        t = hints[f.name]
        if typing.get_origin(t) is dict or t is dict:
            t = dict
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append(ParamSpec(f.name, t, default, meta.get("help", ""), meta.get("cpu"), meta.get("min"),
                             meta.get("max"), meta.get("min_open", False), meta.get("max_open", False),
                             meta.get("cli", True) and t is not dict))
    return tuple(out)


def to_dict(cfg: Config) -> dict[str, Any]:
    return cfg.to_dict()


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    return cls.from_dict(data)


def stable_hash(obj: Any) -> str:
    """Short content hash of a JSON-able object (sorted keys), used for cache keys."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


# ---- data --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig(Config):
    """Parameters of the data pipeline (raw log -> sessions -> split -> items -> graph -> PE)."""

    format: DataFormat = param(DataFormat.RETAILROCKET, "format of the raw log", cli=False)
    # ingest, format events: what the log's columns are
    columns: str = param("", "format events: ROLE=COLUMN,... naming the log's columns: item and time, "
                         "session or user (no session: sessions from the user's inactivity gaps), "
                         "optionally event")
    # (not `events`: the global `--events jsonl` flag has that name)
    event_map: str = param("", "format events: RAW=TYPE,... mapping the event column's values to view, "
                           "addtocart, transaction (default: the values are those names)")
    time_format: TimeFormat = param(TimeFormat.AUTO, "format events: the time column as auto (epoch "
                                    "s/ms/us/ns from the magnitude, or ISO-8601 text), s, ms, us, ns or iso")
    # sessionize
    session_gap_minutes: float = param(30.0, "inactivity (minutes) that starts a new session",
                                       min=0, min_open=True, max=525_600)
    min_session_length: int = param(3, "drop sessions with fewer events (a session needs a target)", min=2,
                                    max=100_000)
    max_session_length: int = param(50, "keep the last N events of longer sessions", min=2, max=100_000)
    min_item_support: int = param(1, "drop items seen fewer times in the whole log first", min=1,
                                  max=1_000_000_000)
    # split
    split_mode: SplitMode = param(SplitMode.RATIO, "ratio (70/15/15 by start time) | days (the last "
                                  "test_days are test) | test_file (a published test file)")
    train_ratio: float = param(0.70, "share of sessions for train (split_mode ratio)", min=0, max=1,
                               min_open=True, max_open=True)
    val_ratio: float = param(0.15, "share for validation (ratio), or of train kept as validation",
                             min=0, max=1, max_open=True)
    blackout_days: float = param(2.0, "sessions starting this long after a cut point are dropped", min=0,
                                 max=36_500)
    test_days: float = param(7.0, "split_mode days: the last N days are test", min=0, min_open=True,
                             max=36_500)
    refit: bool = param(False, "validation joins train (the papers' protocol: train on every training "
                        "session, test unchanged); made by `sessrec train --refit`", cli=False)
    # graph
    cooc_window: int = param(5, "positions i < j <= i + window are linked in the item graph", min=1,
                             max=100_000)
    # encodings
    pe_dim: int = param(16, "Laplacian positional encoding dimension k", min=1, max=1024)

    def check(self) -> None:
        if self.max_session_length < self.min_session_length:
            raise InputError("max_session_length must be >= min_session_length")
        if self.format == DataFormat.EVENTS:
            self.log_columns()
            self.event_types()
        else:
            given = [name for name in ("columns", "event_map") if getattr(self, name)]
            if self.time_format != TimeFormat.AUTO:
                given.append("time_format")
            if given:
                raise InputError(f"{', '.join(given)}: only for --format events (format {self.format} "
                                 f"has fixed columns)")
        if self.split_mode == SplitMode.RATIO and self.train_ratio + self.val_ratio >= 1:
            raise InputError("train_ratio + val_ratio must be < 1 (test is the rest)")

    def log_columns(self) -> dict[str, str]:
        """format events: {role: file column}, checked (item, time and session or user; see LogRole)."""
        cols = parse_mapping(self.columns, "columns", keys=values(LogRole))
        missing = [r for r in (LogRole.ITEM, LogRole.TIME) if r not in cols]
        if missing or not ({LogRole.SESSION, LogRole.USER} & set(cols)):
            need = ", ".join(missing + ([] if {LogRole.SESSION, LogRole.USER} & set(cols) else ["session or user"]))
            raise InputError(f"columns: {self.columns or '(none)'!r} names no {need} column; format events "
                             f"needs --columns item=COL,time=COL,user=COL (or session=COL)[,event=COL]")
        return cols

    def event_types(self) -> dict[str, str]:
        """format events: {raw event value: canonical type} (empty: the values are the type names)."""
        return parse_mapping(self.event_map, "event_map", values=values(EventType))

    @property
    def has_session_ids(self) -> bool:
        """Formats whose rows already carry a session id (sessionize keeps them); srgnn's sessions are
        given as lists, so they have ids too; an events log when it names a session column."""
        if self.format == DataFormat.EVENTS:
            return LogRole.SESSION in parse_mapping(self.columns, "columns")
        return self.format in (DataFormat.RSC15, DataFormat.DIGINETICA, DataFormat.SRGNN)

    @property
    def has_event_types(self) -> bool:
        """The log says view / addtocart / transaction (the graph then counts event pairs)."""
        if self.format == DataFormat.EVENTS:
            return LogRole.EVENT in parse_mapping(self.columns, "columns")
        return self.format == DataFormat.RETAILROCKET


# ---- training ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig(Config):
    """How a run trains and evaluates. The model's hyperparameters are `model_params`: the complete
    `to_dict()` of its model config (see `engine.models.registry`)."""

    dataset: str = param("demo", "dataset name", cli=False)
    model: str = param("graph_transformer", "model name (sessrec models)", cli=False)
    model_params: dict = param({}, "the model's hyperparameters, resolved and complete", cli=False)
    epochs: int = param(20, "epochs at most (early stopping may end sooner)", min=1, max=100_000)
    schedule_epochs: int = param(0, "epochs the learning-rate schedule spans (0: epochs); a refit trains "
                                 "the chosen epochs on the schedule of the run that chose them", min=0,
                                 max=100_000)
    batch_size: int = param(512, "training examples per step", min=1, max=1 << 24)
    # 3e-3 won on validation over 1e-3 for every GNN on YooChoose-100k, for the Graph Transformer on
    # YooChoose 1/64 and on the demo (docs/benchmarks.md, "The default learning rate")
    lr: float = param(3e-3, "peak learning rate (AdamW)", min=0, min_open=True, max=100)
    weight_decay: float = param(1e-4, "AdamW weight decay (not on biases and norms)", min=0, max=100)
    warmup_steps: int = param(200, "linear warm-up steps (at most a tenth of the run)", min=0,
                              max=1_000_000_000)
    schedule: Schedule = param(Schedule.COSINE, "learning-rate decay after warm-up")
    grad_clip: float = param(1.0, "gradient norm clip (0 = off)", min=0, max=1e9)
    loss: Loss = param(Loss.AUTO, "auto (ce if the [batch x items] logits fit in memory, else "
                       "sampled) | ce (full softmax) | sampled (in-batch + uniform, logQ) | bpr")
    negatives: int = param(256, "sampled: uniform negatives per batch; bpr: per example", min=1,
                           max=1 << 24)
    examples: Protocol = param(Protocol.PREFIXES, "prefixes: every next item; last: one per session")
    val_protocol: Protocol = param(Protocol.PREFIXES, "protocol whose val Recall@10 drives early stopping")
    patience: int = param(3, "epochs without val Recall@10 improvement before stopping", min=1,
                          max=100_000)
    early_stopping: bool = param(True, "keep the best epoch on validation and stop after `patience` "
                                 "epochs without improvement; off: train exactly `epochs` and keep the "
                                 "last (a refit on all training data, with the epoch chosen on "
                                 "validation before)")
    device: Device = param(Device.AUTO, "auto | cpu | cuda")
    bf16: bool = param(True, "bfloat16 autocast on CUDA (ignored on CPU)")
    compile: bool = param(False, "torch.compile the model")
    seed: int = param(0, "random seed (data order, initialisation, PE signs)", min=0, max=2 ** 32 - 1)
    eval_batch_size: int = param(1024, "examples per evaluation batch", min=1, max=1 << 24)
    num_threads: int = param(0, "CPU threads for torch (0: the job's share of the machine)", min=0,
                             max=4096)
    warm_start: str = param("", "run id whose weights this run starts from (its item index mapped onto "
                            "this dataset's; `sessrec train --warm-start RUN`)", cli=False)
    refit_of: str = param("", "the run whose validation chose this refit's epochs and hyperparameters "
                          "(empty: not a refit)", cli=False)


# ---- models: one config per family --------------------------------------------------------------
@dataclass(frozen=True)
class NoParams(Config):
    """Models without hyperparameters (popularity baselines)."""


@dataclass(frozen=True)
class GNNConfig(Config):
    """Session GNNs (GraphSAGE has no attention heads)."""

    # CPU preset, chosen on validation on the small demo (Graph Transformer, 2-core CPU): val
    # Recall@10 0.643 at hidden 64, 0.699 at 128 (26 s/epoch), 0.707 at 256 (63 s/epoch)
    hidden: int = param(256, "hidden size (node, session and item vectors)", cpu=128, min=1, max=65_536)
    layers: int = param(2, "message-passing layers", min=0, max=64)
    use_pe: bool = param(True, "add the Laplacian positional encodings to the node inputs")
    readout: Readout = param(Readout.ATTENTION, "session readout over the prefix positions")
    graph_mode: GraphMode = param(GraphMode.TRANSITIONS, "session graph: click transitions or the "
                                  "co-occurrence graph induced on the session's items")
    # dropout, scale and pos_emb chosen on YooChoose-100k's validation split (Graph Transformer,
    # hidden 128; val prefixes Recall@20 / MRR@20): 0.1 / 16 / off 0.657 / 0.341; pos_emb 0.661 / 0.341;
    # + dropout 0.3 0.671 / 0.354 (0.5: 0.666 / 0.350); + scale 12 0.679 / 0.356
    dropout: float = param(0.3, "dropout on node inputs and the session vector", min=0, max=1, max_open=True)
    normalize: bool = param(True, "NISER: L2-normalised session and item vectors, scaled")
    scale: float = param(12.0, "NISER scale of the normalised scores", min=0, min_open=True, max=1000)
    repeat: bool = param(True, "repeat scorer: learned recency weights for items already in the session")
    pos_emb: bool = param(True, "reversed position embeddings in the attention readout (GCE-GNN)")
    global_k: int = param(0, "global item graph: attend over each item's k most similar items in the "
                          "train co-occurrence graph (GCE-GNN-like; 0 = off)", min=0, max=10_000)
    item_features: bool = param(True, "add embeddings of the item's category path and price bucket to its "
                                "vector when the dataset has item metadata (sessrec data items); items "
                                "unseen in training are then scored from their features (cold start)")
    cold_dropout: float = param(0.1, "item_features: share of items whose own embedding a training step "
                                "replaces by the new-item vector, so that feature-only vectors learn to stand "
                                "alone", min=0, max=1, max_open=True)
    switch: bool = param(False, "repeat-or-explore switch (RepeatNet): the session's items score a learned "
                         "z(session) + their log-softmax among the session's items, the others their dot product")
    contrastive: float = param(0.0, "weight of a self-supervised InfoNCE loss between two dropout views of "
                               "each session vector (0 = off)", min=0, max=100)
    cl_temp: float = param(0.2, "temperature of the contrastive loss", min=0, min_open=True, max=100)
    highway: bool = param(False, "SGNN-HN highway gate: each node mixes its input embedding and its "
                          "message-passing output by a learned gate")

    def check(self) -> None:
        if self.graph_mode == GraphMode.NONE:
            raise InputError("graph_mode: a GNN needs a session graph (transitions or cooc)")


@dataclass(frozen=True)
class AttentionGNNConfig(GNNConfig):
    """GAT and Graph Transformer: attention heads split the hidden size."""

    heads: int = param(2, "attention heads (hidden must be divisible by heads)", min=1, max=1024)

    def check(self) -> None:
        super().check()
        if self.hidden % self.heads:
            raise InputError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")


@dataclass(frozen=True)
class FFNGraphTransformerConfig(AttentionGNNConfig):
    ffn_mult: int = param(2, "feed-forward width as a multiple of hidden", min=1, max=64)


@dataclass(frozen=True)
class ItemKNNConfig(Config):
    neighbors: int = param(100, "neighbours kept per item", min=1, max=1_000_000)
    decay: float = param(0.5, "weight of the item k steps before the last: decay^k", min=0, max=1)
    alpha: float = param(0.5, "asymmetric cosine: count / (deg_a^alpha deg_b^(1-alpha))", min=0, max=1)


@dataclass(frozen=True)
class SKNNConfig(Config):
    k: int = param(100, "neighbour sessions", min=1, max=1_000_000)
    sample: int = param(500, "most recent candidate sessions considered", min=1, max=1_000_000_000)
    weighting: Weighting = param(Weighting.DIV, "position weight of the prefix items (similarity)")
    score_weighting: Weighting = param(Weighting.DIV, "position weight in the neighbour (scores)")
    idf: float = param(0.0, "IDF weight of rare items in the similarity (0 = off)", min=0, max=1e6)


@dataclass(frozen=True)
class SRConfig(Config):
    """Sequential rules (session-rec's SequentialRules; its defaults)."""

    steps: int = param(10, "rules a -> b for b up to this many positions after a in a train session", min=1,
                       max=100_000)
    weighting: Weighting = param(Weighting.DIV, "rule weight by the distance d of b after a "
                                 "(div: 1/d, quadratic: 1/d^2, log: 1/log10(d+1.7), linear, same)")
    pruning: int = param(20, "rules kept per antecedent, the heaviest (0 = all)", min=0, max=1_000_000)


# STAN and V-STAN: the values session-rec tuned for Diginetica (conf/save/diginetica/single split,
# the "-mrr" entries); its constructor defaults are sample 5000, lambda_spw 1.02, lambda_snh 5,
# lambda_inh 2.05 (V-STAN: lambda_ipw 1.02, lambda_idf 5)
@dataclass(frozen=True)
class STANConfig(Config):
    """Sequence and Time Aware Neighbourhood (Garg et al. 2019; session-rec's STAN). A lambda of 0
    turns its factor off."""

    k: int = param(500, "neighbour sessions", min=1, max=1_000_000)
    sample: int = param(5000, "most recent candidate sessions considered (0 = all)", min=0, max=1_000_000_000)
    lambda_spw: float = param(1.25, "prefix position weight exp((p - n) / lambda) in the similarity",
                              min=0, max=1e6)
    lambda_snh: float = param(80.0, "neighbour recency (days): exp(-(now - its last event) / lambda)",
                              min=0, max=1e6)
    lambda_inh: float = param(5.0, "item weight exp(-|p - p*| / lambda) by its distance in the "
                              "neighbour from the last item shared with the prefix", min=0, max=1e6)


@dataclass(frozen=True)
class VSTANConfig(STANConfig):
    """V-STAN (Ludewig et al. 2021; session-rec's VSKNN_STAN): STAN plus V-SKNN's weight of the
    latest shared prefix position and an idf boost of rare items."""

    k: int = param(1500, "neighbour sessions", min=1, max=1_000_000)
    lambda_spw: float = param(1.25, "prefix position weight exp((p - n) / lambda) in the similarity",
                              min=0, max=1e6)
    lambda_snh: float = param(100.0, "neighbour recency (days): exp(-(now - its last event) / lambda)",
                              min=0, max=1e6)
    lambda_inh: float = param(10.0, "item weight exp(-|p - p*| / lambda) by its distance in the "
                              "neighbour from the last item shared with the prefix", min=0, max=1e6)
    lambda_ipw: float = param(10.0, "neighbour weight exp((p - n) / lambda), p = the latest prefix "
                              "position it shares", min=0, max=1e6)
    lambda_idf: float = param(10.0, "item score x (1 + lambda * log(S / train count))", min=0, max=1e6)


@dataclass(frozen=True)
class HybridConfig(Config):
    """A finished GNN run mixed with a baseline (engine.models.hybrid)."""

    gnn_run: str = param("", "run id of a finished GNN run on the same dataset")
    baseline: str = param("sknn", "baseline model (its default parameters) when no baseline_run is given")
    baseline_run: str = param("", "run id of a baseline run whose (tuned) parameters to use")
    weight: float = param(-1.0, "baseline share of the mixed distribution; < 0: chosen on validation", min=-1,
                          max=1)
    select_metric: str = param("mrr@20", "validation metric that chooses the weight")
    select_protocol: Protocol = param(Protocol.PREFIXES, "validation protocol that chooses the weight")

    def check(self) -> None:
        from engine.core.metrics import metric_names
        if not self.gnn_run:
            raise InputError("hybrid needs gnn_run: the run id of a finished GNN run (--gnn-run RUN)")
        if self.select_metric not in metric_names():
            raise InputError(f"hybrid select_metric {self.select_metric!r}; expected one of {', '.join(metric_names())}")


# ---- the online loop: A/B tests, traffic simulation, refresh, tracking ---------------------------
@dataclass(frozen=True)
class ABTestConfig(Config):
    """How `sessrec ab report` (and the app's Serve screen) reads an experiment."""

    alpha: float = param(0.05, "error rate of the sequential test and the intervals (two-sided)", min=0,
                         max=0.5, min_open=True, max_open=True)
    mixture_sd: float = param(0.05, "mSPRT: standard deviation of the normal mixture over the difference in "
                              "session CTR (the effect size the test is tuned to find soonest)", min=0,
                              min_open=True, max=1)
    min_sessions: int = param(20, "sessions each arm needs before the sequential test is computed", min=2,
                              max=10_000_000)
    srm_alpha: float = param(0.001, "sample-ratio mismatch: chi-square p-value below which the split is "
                             "called broken", min=0, max=0.5, min_open=True)


@dataclass(frozen=True)
class SimulateConfig(Config):
    """`sessrec ab simulate`: held-out test sessions replayed as users."""

    sessions: int = param(200, "test sessions to replay at most", min=1, max=10_000_000)
    k: int = param(10, "list length requested after each event", min=1, max=100)
    position_bias: float = param(1.0, "a listed next item at rank r (1 = top) is clicked with probability "
                                 "1 / r^position_bias (position-based model; 0: always)", min=0, max=10)
    concurrency: int = param(4, "sessions replayed at once (one connection each)", min=1, max=256)
    max_seconds: float = param(300.0, "stop after this long", min=0, min_open=True, max=86_400)
    seed: int = param(0, "which test sessions, their ids (sim<seed>-<n>) and the clicks", min=0,
                      max=2 ** 32 - 1)


@dataclass(frozen=True)
class RefreshConfig(Config):
    """`sessrec refresh`: the warm-started retraining and its promotion guard."""

    epochs: int = param(2, "epochs of the warm-started training", min=1, max=100_000)
    metric: str = param("recall@20", "validation metric (protocol prefixes) that the guard compares")
    margin: float = param(0.0, "promote only if the new run's metric exceeds the serving run's by more "
                          "than this (absolute)", min=-1, max=1)

    def check(self) -> None:
        from engine.core.metrics import metric_names
        if self.metric not in metric_names():
            raise InputError(f"metric {self.metric!r}; expected one of {', '.join(metric_names())}")


@dataclass(frozen=True)
class TrackingConfig(Config):
    """Where runs and tuning trials are also logged (`engine.tracking`)."""

    tracking: str = param("", "mlflow (the workspace's local store, WORKSPACE/mlruns), mlflow:URI, or none; "
                          "default: the workspace's settings.json 'tracking', else none")

    def check(self) -> None:
        t = self.tracking
        if t and t != "none" and t != "mlflow" and not t.startswith("mlflow:"):
            raise InputError(f"tracking {t!r}: expected mlflow, mlflow:URI or none")
