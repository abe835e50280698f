"""What a dataset looks like to a person: one report per dataset, for the CLI's tables and the app.

`dataset_report` never raises for a broken dataset: an unreadable manifest (or anything else that
stops the status from being computed) becomes the report's `error`, so that a listing of all datasets
shows every readable one and marks the others with their reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.errors import SessrecError
from engine.core.schema import Split
from engine.core.text import fmt
from engine.core.workspace import Workspace
from engine.data.format_specs import REASON_LABELS, source_is_folder
from engine.data.manifest import Dataset
from engine.data.pipeline import StageStatus, status, summary_stats

NOTE_WIDTH = 80   # an error shown as a stage's note is cut here (the full text is in `error`)
BUILT_STAGES = ("items", "graph")   # enough to train a baseline
_OPTIONAL = ("metadata", "oracle")  # stages only some datasets have


@dataclass
class StageReport:
    name: str
    state: str              # missing | stale | building | done | failed
    seconds: float | None
    note: str               # `stage_note`: headline stats, or the error of a failed/stale stage
    error: str | None = None


@dataclass
class DatasetReport:
    name: str
    format: str = "?"
    source: str = ""        # the source file's (an srgnn dataset: folder's) path ("" when unknown)
    is_demo: bool = False
    stages: list[StageReport] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    bad_rows: list[str] = field(default_factory=list)   # `bad_rows_text` of the log and the test file
    error: str | None = None    # why the dataset could not be read; everything else is then empty

    @property
    def source_kind(self) -> str:
        """"folder" for formats imported from a folder (srgnn), else "file"."""
        return "folder" if source_is_folder(self.format) else "file"

    @property
    def built(self) -> bool:
        """The stages every model needs are done."""
        names = {s.name for s in self.stages}
        return set(BUILT_STAGES) <= names and all(self.state_of(n) == "done" for n in BUILT_STAGES)

    @property
    def fully_built(self) -> bool:
        return bool(self.stages) and all(s.state == "done" for s in self.stages)

    def state_of(self, stage: str) -> str:
        return next((s.state for s in self.stages if s.name == stage), "missing")

    def not_done(self, stages) -> list[str]:
        """Those of `stages` the dataset has and that are not done (a model's optional stages, such
        as the item metadata, are passed over where the dataset has none: as `require_built` does)."""
        have = {s.name for s in self.stages}
        return [s for s in stages if (s in have or s not in _OPTIONAL) and self.state_of(s) != "done"]


def stage_note(s: StageStatus) -> str:
    """One line about a stage: its error when failed or stale, else its headline stats."""
    st = s.stats
    if s.error and s.state in ("failed", "stale"):
        return s.error[:NOTE_WIDTH]
    notes = {
        "ingest": lambda: f"{st.get('events', 0):,} events, {st.get('items', 0):,} items"
                          + (f", {bad_row_count(st.get('reader', {}).get('bad_rows')):,} bad rows"
                             if st.get("reader", {}).get("bad_rows") else "")
                          + (f"; test file {st['test_file'].get('events', 0):,} events"
                             if isinstance(st.get("test_file"), dict) else ""),
        "sessionize": lambda: f"{st.get('sessions', 0):,} sessions, median length {st.get('length_median')}, "
                              f"repeat rate {st.get('repeat_rate')}",
        "split": lambda: " / ".join(f"{p} {st.get(p, {}).get('sessions', 0):,}" for p in Split)
                         + f", blackout dropped {st.get('blackout_dropped', 0):,}",
        "items": lambda: f"{st.get('items', 0):,} items; test unseen events {st.get('test', {}).get('unseen_events', 0):,}",
        "graph": lambda: f"{st.get('nodes', 0):,} nodes, {st.get('edges', 0):,} edges, avg degree "
                         f"{fmt(st.get('avg_degree'))}, {st.get('components', 0):,} components",
        "encodings": lambda: f"k={st.get('k', '-')}, {st.get('method', '')}",
        "oracle": lambda: f"Recall@10 last {fmt(st.get('recall@10_last'))}, prefixes {fmt(st.get('recall@10_prefixes'))}",
        "metadata": lambda: f"{st.get('items', 0):,} items, {st.get('categories', 0):,} categories; covers "
                            f"{st.get('item_coverage', 0):.1%} of the log's items, {st.get('event_coverage', 0):.1%} "
                            f"of its events",
    }
    try:
        return notes[s.name]() if st else ""
    except Exception:  # stats of an older layout: show nothing rather than fail the table
        return ""


def bad_row_count(bad_rows: dict | None) -> int:
    return sum(int(v.get("count", 0)) for v in (bad_rows or {}).values())


def bad_rows_text(reader: dict) -> str:
    """The rows a reader skipped, in one line ("" if none), from its stats (`ReadResult.stats`):

        events.csv: skipped 3 bad rows: non-numeric or negative id (2; lines 5, 9), unknown event
        type (1; line 12)
    """
    bad = reader.get("bad_rows") or {}
    if not bad:
        return ""
    parts = []
    for reason, d in bad.items():
        lines, count = d.get("first_lines", []), d.get("count", 0)
        where = "line" if count == 1 else "lines" if count == len(lines) else "first lines"
        parts.append(f"{REASON_LABELS.get(reason, reason)} ({count:,}; {where} "
                     f"{', '.join(map(str, lines))})")
    name = Path(reader["path"]).name if reader.get("path") else "source"
    return f"{name}: skipped {bad_row_count(bad):,} bad rows: {', '.join(parts)}"


def bad_row_lines(ingest_stats: dict) -> list[str]:
    """`bad_rows_text` of the ingested log and of its test file, for those with bad rows."""
    readers = [ingest_stats.get("reader"), (ingest_stats.get("test_file") or {}).get("reader")]
    return [t for r in readers if isinstance(r, dict) and (t := bad_rows_text(r))]


def dataset_report(ws: Workspace, name: str) -> DatasetReport:
    """The report of dataset `name`; a dataset that cannot be read gives a report with `error` set."""
    try:
        ds = Dataset.load(ws, name)
        sts = status(ds)
        summary = summary_stats(ds)
    except SessrecError as e:
        return DatasetReport(name, error=str(e))
    except Exception as e:   # a manifest we did not foresee must not hide the other datasets
        return DatasetReport(name, error=f"cannot read dataset {name!r}: {type(e).__name__}: {e}")
    stages = [StageReport(s.name, s.state, s.seconds, stage_note(s), s.error) for s in sts]
    src = ds.source_file("path")
    ingest = next((s.stats for s in sts if s.name == "ingest"), {})
    return DatasetReport(name, ds.source.get("format") or ds.config.format, str(src or ""), ds.is_demo,
                         stages, summary, bad_row_lines(ingest))


def dataset_reports(ws: Workspace) -> list[DatasetReport]:
    """A report for every dataset of the workspace, readable or not, by name."""
    return [dataset_report(ws, n) for n in ws.dataset_names()]
