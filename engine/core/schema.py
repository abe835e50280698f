"""Every vocabulary of sessrec, defined once: the engine, the CLI, the app and the tests import it.

Each is a `StrEnum`, so a member compares equal to (and serialises as) its plain string: JSON files
written by older versions read back unchanged, and `argparse` / form choices are `list(Enum)`.
Nothing here imports more than the standard library (the CLI imports it before anything heavy).
"""

from __future__ import annotations

import enum
import sys

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10
    class StrEnum(str, enum.Enum):
        """Python 3.10's stand-in for enum.StrEnum: members are their string values."""

        def __str__(self) -> str:
            return str(self.value)


def values(vocab: type[StrEnum]) -> tuple[str, ...]:
    """The plain strings of a vocabulary, in definition order (for messages and choices)."""
    return tuple(m.value for m in vocab)


# ---- data --------------------------------------------------------------------------------------
class DataFormat(StrEnum):
    RETAILROCKET = "retailrocket"
    RSC15 = "rsc15"
    DIGINETICA = "diginetica"
    SRGNN = "srgnn"          # a folder with SR-GNN's all_train_seq.txt and test.txt pickles
    EVENTS = "events"        # any click log (CSV/TSV, Parquet, JSON Lines) with its columns named by --columns


class EventType(StrEnum):
    """The canonical event types, int8 codes 0, 1, 2 in every events table (a log without an event
    column is all views)."""

    VIEW = "view"
    ADDTOCART = "addtocart"
    TRANSACTION = "transaction"


class TimeFormat(StrEnum):
    """How the events format reads its time column: detected, epoch in a unit, or ISO-8601 text."""

    AUTO = "auto"            # numbers: the epoch unit from their magnitude; text: ISO-8601
    S = "s"
    MS = "ms"
    US = "us"
    NS = "ns"
    ISO = "iso"              # 2015-05-03T03:00:00[.fff][Z|+hh:mm]; without a zone: UTC


class LogRole(StrEnum):
    """What a column of the events format holds (`--columns ROLE=COLUMN,...`)."""

    ITEM = "item"
    TIME = "time"
    SESSION = "session"
    USER = "user"
    EVENT = "event"


class ItemField(StrEnum):
    """What a column of an item table holds (`sessrec data items NAME PATH --columns FIELD=COLUMN,...`)."""

    ITEM = "item"
    NAME = "name"
    CATEGORY = "category"
    PRICE = "price"
    AVAILABLE = "available"


class SplitMode(StrEnum):
    RATIO = "ratio"          # 70/15/15 by session start, blackout before each cut
    DAYS = "days"            # the last `test_days` are test
    TEST_FILE = "test_file"  # a published test file is test


class StageName(StrEnum):
    """The pipeline's stages, in order (`oracle` only for demo datasets)."""

    INGEST = "ingest"
    SESSIONIZE = "sessionize"
    SPLIT = "split"
    ITEMS = "items"
    GRAPH = "graph"
    ENCODINGS = "encodings"
    ORACLE = "oracle"
    METADATA = "metadata"    # an item table attached with `sessrec data items` (name, category path, ...)


class StageState(StrEnum):
    DONE = "done"
    STALE = "stale"
    MISSING = "missing"
    BUILDING = "building"
    FAILED = "failed"


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


# ---- models and training -----------------------------------------------------------------------
class ModelKind(StrEnum):
    GNN = "gnn"
    BASELINE = "baseline"
    HYBRID = "hybrid"        # a trained GNN mixed with a baseline: fitted like a baseline, reported apart


class Loss(StrEnum):
    AUTO = "auto"          # ce when the [batch, V] logits fit in memory, else sampled (a new run
                           # resolves it: engine.train.loss_choice); unresolved it means ce
    CE = "ce"              # full-softmax cross-entropy
    SAMPLED = "sampled"    # in-batch + uniform negatives, logQ correction
    BPR = "bpr"            # BPR with k negatives (the reference project's)


class Device(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Runtime(StrEnum):
    """What runs a GNN's encoder when recommending or serving."""

    TORCH = "torch"          # eager PyTorch
    COMPILED = "compiled"    # PyTorch, the encoder compiled ahead of time by AOTInductor (a C++ compiler)
    ONNX = "onnx"            # ONNX Runtime, from the run's ONNX export


class Search(StrEnum):
    """How the top-k items are found: every item's score, candidates from a product-quantised fast
    scan scored exactly, or the scan from `PQ_MIN_ITEMS` items (engine.inference.recommend)."""

    EXACT = "exact"
    PQ = "pq"
    AUTO = "auto"


class Protocol(StrEnum):
    """Which next items are predicted: every prefix of every session, or only the last item."""

    LAST = "last"
    PREFIXES = "prefixes"


class Schedule(StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    CONSTANT = "constant"


class Readout(StrEnum):
    ATTENTION = "attention"
    MEAN = "mean"
    MAX = "max"
    LAST = "last"


class GraphMode(StrEnum):
    TRANSITIONS = "transitions"   # click transitions inside the session
    COOC = "cooc"                 # the co-occurrence graph induced on the session's items
    NONE = "none"                 # no session graph (baselines)


class Conv(StrEnum):
    SAGE = "sage"
    GAT = "gat"
    TRANSFORMER = "transformer"


class Weighting(StrEnum):
    """Position weights of session-kNN (session-rec's names)."""

    DIV = "div"
    LINEAR = "linear"
    SAME = "same"
    LOG = "log"
    QUADRATIC = "quadratic"


# ---- runs and jobs -----------------------------------------------------------------------------
class RunStatus(StrEnum):
    STARTING = "starting"          # the app started it; no event yet
    RUNNING = "running"
    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    STOPPED = "stopped"            # SIGTERM / ctrl+t: last.pt kept, resumable
    FAILED = "failed"
    INTERRUPTED = "interrupted"    # the process died without a final event (kill -9, OOM killer)
    UNREADABLE = "unreadable"      # its config.json cannot be read

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.STARTING, RunStatus.RUNNING)

    @property
    def succeeded(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.EARLY_STOPPED)


class StopReason(StrEnum):
    """Why a run ended as `stopped`, besides the signal names (SIGTERM, SIGINT) written as they are."""

    PRUNED = "pruned"              # hyperparameter tuning gave up on it after an epoch


class JobStatus(StrEnum):
    QUEUED = "queued"              # waits for its share of the machine
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"
    DETACHED = "detached"          # left running when the app quit

    @property
    def active(self) -> bool:
        """Holds (or waits for) machine resources."""
        return self in (JobStatus.QUEUED, JobStatus.STARTING, JobStatus.RUNNING, JobStatus.STOPPING)

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.STOPPED,
                        JobStatus.INTERRUPTED)


class JobPolicy(StrEnum):
    """How the app runs CPU jobs that are started while another one runs."""

    SHARE = "share"                # together, each with its share of the cores
    QUEUE = "queue"                # one at a time; later ones wait (JobStatus.QUEUED)


class JobKind(StrEnum):
    DEMO = "demo"
    IMPORT = "import"
    BUILD = "build"
    DELETE = "delete"
    TRAIN = "train"
    TUNE = "tune"
    SERVE = "serve"          # a long-running HTTP server, until stopped


class ErrorKind(StrEnum):
    ERROR = "error"
    CUDA_OOM = "cuda_oom"
    CUDA_ERROR = "cuda_error"
    OS_ERROR = "os_error"          # disk full, permissions: the message names the path
    INTERRUPTED = "interrupted"
    WORKER_LOST = "worker_lost"    # data-parallel: another worker crashed, was killed or timed out
