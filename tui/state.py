"""What the screens show, computed without a UI: run state from events, dataset summaries,
distributions, table rows, form parsing and formatting. Testable on its own; no Textual here.

Reading datasets imports the engine's data modules (numpy, pyarrow; never torch), so callers run
these functions in thread workers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

STAGE_MARK = {"done": "ok", "stale": "stale", "missing": "-", "building": "build", "failed": "FAIL"}
STATE_STYLE = {"done": "green", "stale": "yellow", "missing": "dim", "failed": "red bold", "building": "cyan"}
JOB_STYLE = {"running": "cyan", "starting": "cyan", "stopping": "yellow", "done": "green", "failed": "red bold",
             "cancelled": "yellow", "stopped": "yellow", "interrupted": "red", "detached": "magenta"}
RUN_STYLE = {"running": "cyan", "completed": "green", "early_stopped": "green", "stopped": "yellow",
             "failed": "red bold", "interrupted": "red", "starting": "cyan"}
TERMINAL_RUN = ("completed", "early_stopped", "stopped", "failed", "interrupted")


# ---- formatting ----------------------------------------------------------------------------------
def fmt_num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return "-"
        if v == int(v) and (abs(v) >= 1000 or digits >= 4):
            return f"{int(v):,}"
        return f"{v:.{digits}f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_bar(fraction: float | None, width: int = 20) -> str:
    """A text progress bar (ASCII, so it reads the same over any SSH terminal)."""
    if fraction is None:
        return "[" + "?" * 0 + "." * width + "]"
    n = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * n + "." * (width - n) + "]"


def short_path(path: str | os.PathLike | None, root: str | os.PathLike | None = None) -> str:
    """A path relative to `root` (or else the current folder) when inside it, else with ~ for the
    home folder."""
    if not path:
        return "-"
    p = Path(path)
    if root is not None:
        try:
            return str(p.resolve().relative_to(Path(root).resolve()))
        except (ValueError, OSError):
            pass
    try:
        rel = p.resolve().relative_to(Path.cwd().resolve())
        return str(rel) if str(rel) != "." else "."
    except (ValueError, OSError):
        pass
    home = str(Path.home())
    s = str(p)
    return "~" + s[len(home):] if home not in ("/", "") and s.startswith(home + os.sep) else s


# ---- thinning ------------------------------------------------------------------------------------
def thin(xs: Sequence[float], ys: Sequence[float | None], n: int) -> tuple[list[float], list[float]]:
    """At most ~`n` points: bucket means (x and y) over equal index ranges; None values dropped.
    The last point is kept as it is (the newest value is what people watch)."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and y == y]
    n = max(2, int(n))
    if len(pts) <= n:
        return [p[0] for p in pts], [p[1] for p in pts]
    out_x, out_y = [], []
    size = len(pts) / (n - 1)
    for b in range(n - 1):
        lo, hi = int(b * size), max(int(b * size) + 1, int((b + 1) * size))
        chunk = pts[lo:min(hi, len(pts) - 1)] or pts[lo:lo + 1]
        out_x.append(sum(p[0] for p in chunk) / len(chunk))
        out_y.append(sum(p[1] for p in chunk) / len(chunk))
    out_x.append(pts[-1][0])
    out_y.append(pts[-1][1])
    return out_x, out_y


# ---- a run, from its events ----------------------------------------------------------------------
@dataclass
class RunState:
    """Everything the Train screen shows about one run, folded from its events (live or from file)."""

    run_id: str
    status: str = "starting"
    model: str | None = None
    dataset: str | None = None
    device: str | None = None
    device_info: dict = field(default_factory=dict)
    n_params: int | None = None
    train_examples: int | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None
    pid: int | None = None
    started: float | None = None
    ended: float | None = None
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    epoch_x: list[int] = field(default_factory=list)
    val_recall: list[float | None] = field(default_factory=list)
    val_ndcg: list[float | None] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    last_step: dict = field(default_factory=dict)
    best_val: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    error: str | None = None
    error_kind: str | None = None
    suggestion: str | None = None
    traceback: str | None = None
    version: int = 0            # bumped on every change (the charts redraw when it moves)
    kind: str = "gnn"

    def feed(self, ev: dict) -> bool:
        t = ev.get("type")
        if t == "run_started":
            self.status = "running"
            self.model, self.dataset = ev.get("model"), ev.get("dataset")
            self.device, self.device_info = ev.get("device"), ev.get("device_info") or {}
            self.n_params, self.train_examples = ev.get("n_params"), ev.get("train_examples")
            self.steps_per_epoch, self.epochs = ev.get("steps_per_epoch"), ev.get("epochs")
            self.pid, self.started = ev.get("pid"), ev.get("time")
            self.kind = "baseline" if not self.steps_per_epoch and not self.epochs else "gnn"
            self.error = self.error_kind = self.suggestion = self.traceback = None
        elif t == "step":
            if ev.get("loss") is not None:
                self.steps.append(ev.get("step", len(self.steps)))
                self.losses.append(float(ev["loss"]))
            self.last_step = ev
        elif t == "epoch":
            m = (ev.get("val") or {}).get("metrics", {})
            self.epoch_x.append(ev.get("epoch", len(self.epoch_x) + 1))
            self.val_recall.append(m.get("recall@10"))
            self.val_ndcg.append(m.get("ndcg@10"))
            if ev.get("epoch_seconds"):
                self.epoch_seconds.append(float(ev["epoch_seconds"]))
            self.best_epoch, self.best_value = ev.get("best_epoch"), ev.get("best_value")
            if ev.get("improved"):
                self.best_val = m
        elif t == "run_finished":
            self.status = ev.get("status", "completed")
            self.ended = ev.get("time")
            if ev.get("best_val"):
                self.best_val = ev["best_val"]
            if ev.get("best_epoch") is not None:
                self.best_epoch = ev.get("best_epoch")
            self.test = {p: (r or {}).get("metrics", {}) for p, r in (ev.get("test") or {}).items()}
        elif t == "run_failed":
            self.status = "interrupted" if ev.get("error_kind") == "interrupted" else "failed"
            self.ended = ev.get("time")
            self.error, self.error_kind = ev.get("error"), ev.get("error_kind")
            self.suggestion, self.traceback = ev.get("suggestion") or None, ev.get("traceback") or None
        else:
            return False
        self.version += 1
        return True

    def feed_all(self, events: Iterable[dict]) -> "RunState":
        for ev in events:
            self.feed(ev)
        return self

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_RUN

    def fail(self, error: str, kind: str = "error") -> None:
        """The child ended without a run_failed event (killed, crashed before its run folder)."""
        if not self.finished or self.status == "interrupted":
            self.status, self.error, self.error_kind = "failed", error, kind
            self.version += 1

    def progress(self) -> tuple[float | None, str]:
        """(fraction of the run, a one-line description)."""
        ev = self.last_step
        if self.kind == "baseline":
            return (1.0 if self.finished else None), "fitting and evaluating the baseline"
        if not ev or not self.steps_per_epoch or not self.epochs:
            return None, "loading data and building the model" if self.status == "running" else self.status
        done = (ev.get("epoch", 1) - 1) * self.steps_per_epoch + ev.get("epoch_step", 0)
        frac = min(1.0, done / (self.steps_per_epoch * self.epochs))
        return frac, (f"epoch {ev.get('epoch')}/{self.epochs}, step {ev.get('epoch_step')}/"
                      f"{self.steps_per_epoch}")

    def stats_lines(self) -> list[tuple[str, str]]:
        ev = self.last_step
        out = [("status", self.status), ("model", self.model or "-"), ("dataset", self.dataset or "-"),
               ("device", self.device or "-")]
        if self.model and self.dataset:
            out.insert(1, ("run", f"{self.model} on {self.dataset}"))
        if self.device_info.get("gpu_name") and (self.device or "").startswith("cuda"):
            out.append(("gpu", f"{self.device_info['gpu_name']} ({self.device_info.get('gpu_memory_gb')} GB)"))
        if self.n_params:
            out.append(("parameters", f"{self.n_params:,}"))
        if ev:
            out.append(("examples/s", fmt_num(ev.get("examples_per_s"))))
            out.append(("loss", fmt_num(ev.get("loss"))))
            if not self.finished:
                out.append(("ETA", fmt_duration(ev.get("eta_s"))))
            if ev.get("gpu_mem_mb") is not None:
                out.append(("GPU memory", f"{ev['gpu_mem_mb']:,.0f} MB peak"))
        if self.epoch_seconds:
            out.append(("epoch time", fmt_duration(self.epoch_seconds[-1])))
        if self.best_epoch:
            out.append(("best epoch", f"{self.best_epoch} (val R@10 {fmt_num(self.best_value)})"))
        test = [f"{p} {fmt_num(self.test[p].get('recall@10'))}" for p in ("last", "prefixes") if self.test.get(p)]
        if test:
            out.append(("test R@10", ", ".join(test)))
        return out


class EventTail:
    """Follow a run's events.jsonl: each `poll()` returns the new complete events."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.pos = 0
        self.partial = b""

    def poll(self, max_bytes: int = 1 << 24) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read(max_bytes)
        except OSError:
            return []
        if not data:
            return []
        self.pos += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(ev, dict):
                out.append(ev)
        return out


def run_state_from_dir(run_dir: Path) -> tuple[RunState, EventTail]:
    """A run re-opened from its folder (after an SSH drop, or one started elsewhere)."""
    tail = EventTail(run_dir / "events.jsonl")
    st = RunState(run_dir.name).feed_all(tail.poll())
    if st.status in ("running", "starting"):
        from tui.jobs import pid_is_engine
        if not pid_is_engine(st.pid):
            st.status = "interrupted"
            st.error = st.error or "the process ended without a final event (killed, or the machine restarted)"
            st.version += 1
    return st, tail


# ---- datasets ------------------------------------------------------------------------------------
@dataclass
class StageRow:
    name: str
    state: str
    seconds: float | None
    note: str
    error: str | None = None


@dataclass
class DatasetInfo:
    name: str
    format: str
    source: str
    is_demo: bool
    stages: list[StageRow]
    summary: dict
    error: str | None = None       # the manifest could not be read

    @property
    def built(self) -> bool:
        needed = {"items", "graph"}
        return all(s.state == "done" for s in self.stages if s.name in needed) and \
            any(s.name == "graph" for s in self.stages)

    @property
    def fully_built(self) -> bool:
        return bool(self.stages) and all(s.state == "done" for s in self.stages)

    def state_of(self, stage: str) -> str:
        for s in self.stages:
            if s.name == stage:
                return s.state
        return "missing"


def _stage_note(name: str, st: dict) -> str:
    try:
        if name == "ingest":
            bad = sum(v.get("count", 0) for v in (st.get("reader", {}).get("bad_rows") or {}).values())
            return f"{st.get('events', 0):,} events, {st.get('items', 0):,} items" + \
                (f", {bad:,} bad rows" if bad else "")
        if name == "sessionize":
            return f"{st.get('sessions', 0):,} sessions, median length {fmt_num(st.get('length_median'))}"
        if name == "split":
            return " / ".join(f"{p} {st.get(p, {}).get('sessions', 0):,}" for p in ("train", "val", "test"))
        if name == "items":
            return f"{st.get('items', 0):,} items"
        if name == "graph":
            return f"{st.get('nodes', 0):,} nodes, {st.get('edges', 0):,} edges"
        if name == "encodings":
            return f"k={st.get('k', '-')} {st.get('method', '')}".strip()
        if name == "oracle":
            return f"R@10 last {fmt_num(st.get('recall@10_last'))}"
    except (AttributeError, TypeError):
        return ""
    return ""


def dataset_info(ws: Any, name: str) -> DatasetInfo:
    from engine.data.manifest import Dataset
    from engine.data.pipeline import status, summary_stats
    try:
        ds = Dataset.load(ws, name)
        sts = status(ds)
    except Exception as e:      # a broken manifest must not take the screen down
        return DatasetInfo(name, "?", "?", False, [], {}, error=str(e))
    rows = [StageRow(s.name, s.state, s.seconds, _stage_note(s.name, s.stats) if s.stats else "", s.error)
            for s in sts]
    src = str(ds.source_file("path") or "")
    return DatasetInfo(name, ds.source.get("format") or "?", short_path(src, ws.root), ds.is_demo, rows,
                       summary_stats(ds))


def dataset_infos(ws: Any) -> list[DatasetInfo]:
    return [dataset_info(ws, n) for n in ws.dataset_names()]


SUMMARY_LABELS = (
    ("raw_events", "raw events"), ("events", "events (sessions)"), ("sessions", "sessions"),
    ("items", "items"), ("length_mean", "mean length"), ("length_median", "median length"),
    ("train_sessions", "train sessions"), ("val_sessions", "val sessions"), ("test_sessions", "test sessions"),
    ("graph_nodes", "graph nodes"), ("graph_edges", "graph edges"), ("graph_avg_degree", "avg degree"),
    ("graph_components", "components"), ("repeat_rate", "repeat rate"),
    ("oracle_recall@10_last", "oracle R@10 last"), ("oracle_recall@10_prefixes", "oracle R@10 prefixes"),
)


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    return [(label, fmt_num(summary[key])) for key, label in SUMMARY_LABELS if summary.get(key) is not None]


@dataclass
class Distributions:
    item_counts: list[int]          # train count per item, most popular first
    length_hist: dict[int, int]     # session length -> number of sessions

    @property
    def empty(self) -> bool:
        return not self.item_counts and not self.length_hist


def distributions(ws: Any, name: str) -> Distributions:
    """Item popularity (items/items.parquet train_count) and session lengths (sessionize)."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    d = ws.dataset(name)
    counts: list[int] = []
    hist: dict[int, int] = {}
    items = d.items
    if items.exists():
        c = pq.read_table(items, columns=["train_count"]).column("train_count").to_numpy()
        counts = np.sort(c)[::-1].astype(int).tolist()
    sess = d.sessions
    if sess.exists():
        col = pq.read_table(sess, columns=["items"]).column("items")
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if len(lengths):
            bc = np.bincount(lengths.astype(np.int64))
            hist = {int(i): int(v) for i, v in enumerate(bc) if v}
    return Distributions(counts, hist)


def popularity_curve(counts: Sequence[int], n: int = 60) -> tuple[list[float], list[float]]:
    """Rank (log-spaced) against train count, so a long tail fits a small plot."""
    if not counts:
        return [], []
    total = len(counts)
    if total <= n:
        return [float(i + 1) for i in range(total)], [float(c) for c in counts]
    ranks = sorted({int(round(math.exp(math.log(total) * i / (n - 1)))) for i in range(n)})
    ranks = [r for r in ranks if 1 <= r <= total]
    return [float(r) for r in ranks], [float(counts[r - 1]) for r in ranks]


def length_bars(hist: dict[int, int], max_len: int = 20) -> tuple[list[str], list[int]]:
    """Session length histogram with the tail folded into a last '>N' bar."""
    if not hist:
        return [], []
    labels, values = [], []
    top = min(max(hist), max_len)
    for L in range(min(hist), top + 1):
        labels.append(str(L))
        values.append(hist.get(L, 0))
    rest = sum(v for L, v in hist.items() if L > top)
    if rest:
        labels.append(f">{top}")
        values.append(rest)
    return labels, values


# ---- runs ----------------------------------------------------------------------------------------
RUN_COLUMNS = (
    ("run", "run_id"), ("model", "model"), ("dataset", "dataset"), ("status", "status"),
    ("epochs", "epochs_run"), ("val R@10", "val_recall"), ("val N@10", "val_ndcg"),
    ("test last", "test_last"), ("test pref", "test_prefixes"), ("time", "seconds"),
    ("device", "device"),
)


def short_run_id(run_id: str, model: str, dataset: str) -> str:
    """Run ids are `<model>-<time>[-n]` (older ones `<time>-<model>-<dataset>`); the table has
    model and dataset columns, so it shows the rest."""
    if run_id.startswith(f"{model}-") and len(run_id) > len(model) + 1:
        return run_id[len(model) + 1:]
    suffix = f"-{model}-{dataset}"
    if suffix in run_id and run_id.index(suffix) > 0:
        head, _, tail = run_id.partition(suffix)
        return head + tail
    return run_id


def run_row(r: Any) -> dict[str, Any]:
    """A RunSummary as a dict of sortable values (keys of RUN_COLUMNS)."""
    return {"run_id": r.run_id, "model": r.model, "dataset": r.dataset, "status": r.status,
            "epochs_run": r.epochs_run, "epochs": r.epochs, "val_recall": r.metric("val"),
            "val_ndcg": r.metric("val", "ndcg@10"), "test_last": r.metric("test_last"),
            "test_prefixes": r.metric("test_prefixes"), "seconds": r.seconds, "device": r.device,
            "created": r.created, "kind": r.kind, "error": r.error, "has_best": r.has_best,
            "has_last": r.has_last}


def sort_rows(rows: list[dict], key: str, reverse: bool = False) -> list[dict]:
    """Missing values always last, whichever the direction."""
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]

    def k(r: dict) -> Any:
        v = r[key]
        return (0, v) if isinstance(v, (int, float)) else (1, str(v))
    return sorted(present, key=k, reverse=reverse) + missing


def run_cells(row: dict) -> list[str]:
    epochs = row.get("epochs_run") or 0
    total = row.get("epochs")
    return [short_run_id(row["run_id"], row["model"], row["dataset"]), row["model"], row["dataset"], row["status"],
            f"{epochs}/{total}" if row.get("kind") != "baseline" and total else ("-" if row.get("kind") == "baseline"
                                                                               else str(epochs)),
            fmt_num(row.get("val_recall")), fmt_num(row.get("val_ndcg")), fmt_num(row.get("test_last")),
            fmt_num(row.get("test_prefixes")), fmt_duration(row.get("seconds")), row.get("device") or "-"]


def recommendable(row: dict) -> bool:
    return bool(row.get("has_best") or row.get("has_last"))


# ---- the train form ------------------------------------------------------------------------------
class FormError(ValueError):
    """A field of a form holds something the engine would reject; the message says which and why."""


def parse_int(text: str, what: str, minimum: int = 1) -> int:
    text = (text or "").strip()
    try:
        v = int(text)
    except ValueError:
        raise FormError(f"{what}: {text!r} is not a whole number") from None
    if v < minimum:
        raise FormError(f"{what} must be >= {minimum}")
    return v


def parse_param(key: str, text: str, default: Any) -> Any:
    """A model hyperparameter typed in the form, converted to its default's type."""
    text = (text or "").strip()
    if text == "":
        raise FormError(f"{key}: empty (default {default})")
    if isinstance(default, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise FormError(f"{key}: expected true or false, got {text!r}")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise FormError(f"{key}: expected a whole number, got {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise FormError(f"{key}: expected a number, got {text!r}") from None
    return text


def changed_params(values: dict[str, str], defaults: dict[str, Any]) -> dict[str, Any]:
    """Parsed form values that differ from the model's defaults (the others stay implicit, so the
    engine's CPU preset still applies to them)."""
    out = {}
    for key, text in values.items():
        if key not in defaults:
            continue
        v = parse_param(key, text, defaults[key])
        if v != defaults[key]:
            out[key] = v
    return out


def effective_defaults(spec_defaults: dict[str, Any], cpu_overrides: dict[str, Any], device: str,
                       has_cuda: bool) -> dict[str, Any]:
    """The values the engine will use: the CPU preset unless the run goes to CUDA."""
    on_cuda = device == "cuda" or (device == "auto" and has_cuda)
    out = dict(spec_defaults)
    if not on_cuda:
        out.update(cpu_overrides)
    return out


def new_run_id(model: str, dataset: str, existing: Iterable[str], stamp: str | None = None) -> str:
    """The engine's run naming (engine.runs.new_run_id); the dataset is in the run's config."""
    from engine.runs import new_run_id as engine_new_run_id
    return engine_new_run_id(model, existing, stamp)


# ---- recommend -----------------------------------------------------------------------------------
def parse_ids(text: str) -> tuple[list[int], str | None]:
    """Item ids typed as 'a, b c' -> ([ids], None), or ([], message) for the first bad token."""
    from engine.data.items import parse_item_ids
    from engine.errors import InputError
    try:
        return parse_item_ids(text), None
    except InputError as e:
        return [], str(e)


BASELINES = ("pop", "spop", "itemknn", "sknn")


def source_key(kind: str, name: str, dataset: str | None = None) -> str:
    """'run:<id>' or 'baseline:<name>@<dataset>' (the CLI's spelling for baselines)."""
    return f"run:{name}" if kind == "run" else f"baseline:{name}@{dataset}"


def parse_source_key(key: str) -> tuple[str, str, str | None]:
    if key.startswith("run:"):
        return "run", key[4:], None
    if key.startswith("baseline:") and "@" in key:
        name, ds = key[len("baseline:"):].split("@", 1)
        return "baseline", name, ds
    raise ValueError(f"not a recommender source: {key!r}")
