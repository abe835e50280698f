"""The runs of a workspace, read through the one reducer, with the one liveness rule (the run lock).

A `RunStore` keeps a tail per events file, so refreshing reads only what was appended since the
last refresh (the app refreshes every half second; each file is read once). One unreadable run
(a broken config.json) is listed as `unreadable` with the reason; it never hides the others.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Iterable

from engine.core.locks import lock_holder
from engine.core.schema import ModelKind, RunStatus
from engine.core.workspace import RunDir, Workspace
from engine.runs.events import EventTail
from engine.runs.state import RunState


@dataclass
class _Entry:
    state: RunState
    tail: EventTail
    config_stamp: tuple[int, int] | None = None
    config_error: str | None = None


class RunStore:
    """Thread-safe: the app refreshes from its timer and from thread workers."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()

    # ---- reading -------------------------------------------------------------------------------
    def refresh(self, run_ids: Iterable[str] | None = None) -> list[RunState]:
        """Bring the given runs (default: every run folder) up to date; returns their states, and
        forgets runs whose folder is gone."""
        ids = list(run_ids) if run_ids is not None else self.ws.run_ids()
        with self._lock:
            if run_ids is None:
                for gone in set(self._entries) - set(ids):
                    del self._entries[gone]
            return [self._refresh_one(rid) for rid in ids]

    def get(self, run_id: str) -> RunState | None:
        """One run, up to date (None when it has no folder)."""
        if not self.ws.run(run_id).exists and run_id not in self._entries:
            return None
        with self._lock:
            return self._refresh_one(run_id)

    def peek(self, run_id: str) -> RunState | None:
        """What the last refresh read of one run (no disk access)."""
        with self._lock:
            entry = self._entries.get(run_id)
            return entry.state if entry is not None else None

    def states(self) -> list[RunState]:
        """What the last refresh read (no disk access)."""
        with self._lock:
            return [e.state for e in self._entries.values()]

    def _refresh_one(self, run_id: str) -> RunState:
        run = self.ws.run(run_id)
        entry = self._entries.get(run_id)
        if entry is None:
            entry = self._entries[run_id] = _Entry(RunState(run_id), EventTail(run.events))
        self._read_config(run, entry)
        st = entry.state
        if entry.tail.path != run.events:
            entry.tail = EventTail(run.events)
        if st.apply_all(entry.tail.poll()):
            st.skipped_lines = entry.tail.skipped
        self._apply_liveness(run, entry)
        if entry.config_error and (st.status != RunStatus.UNREADABLE or st.error != entry.config_error):
            # its events may tell how it went, but without its config it cannot be resumed or evaluated
            st.status, st.error = RunStatus.UNREADABLE, entry.config_error
            st.version += 1
        return st

    @staticmethod
    def _read_config(run: RunDir, entry: _Entry) -> None:
        try:
            stat = run.config.stat()
        except OSError:
            return                            # being created: the events say what there is
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == entry.config_stamp:
            return
        entry.config_stamp = stamp
        try:
            cfg = json.loads(run.config.read_bytes().decode("utf-8"))
            if not isinstance(cfg, dict) or not isinstance(cfg.get("train", {}), dict):
                raise ValueError("not a JSON object with a 'train' object")
        except (OSError, UnicodeDecodeError, ValueError) as e:
            entry.config_error = f"{run.config.name}: {e}"
            return
        if entry.config_error is not None:    # repaired: fold its events again from the start
            entry.state, entry.tail, entry.config_error = RunState(run.run_id), EventTail(run.events), None
        st = entry.state
        train = cfg.get("train", {})
        st.config = train
        st.model = train.get("model", st.model)
        st.dataset = train.get("dataset", st.dataset)
        st.kind = cfg.get("kind", st.kind) or ModelKind.GNN.value
        st.created = str(cfg.get("created", ""))
        st.epochs = st.epochs or train.get("epochs")
        st.version += 1

    def _apply_liveness(self, run: RunDir, entry: _Entry) -> None:
        st = entry.state
        if st.status not in (RunStatus.RUNNING, RunStatus.STARTING, RunStatus.INTERRUPTED):
            return
        holder = lock_holder(run.lock)
        if holder is not None:
            if st.status == RunStatus.INTERRUPTED:     # resumed: events follow
                st.status, st.error, st.error_kind = RunStatus.RUNNING, None, None
                st.version += 1
            return
        # the lock is free: the process is gone, unless it wrote its final event in between
        if st.apply_all(entry.tail.poll()) and st.finished:
            return
        # (a run folder gets its config only under the lock, so "starting" with a free lock is dead)
        if st.status in (RunStatus.RUNNING, RunStatus.STARTING):
            st.mark_interrupted()

    # ---- questions -----------------------------------------------------------------------------
    def running(self, dataset: str | None = None) -> list[RunState]:
        """Runs whose process is alive now (optionally only those on `dataset`)."""
        return [s for s in self.refresh() if s.status == RunStatus.RUNNING
                and (dataset is None or s.dataset == dataset)]

    def live(self, dataset: str) -> list[tuple[str, int | None]]:
        """(run id, pid) of every run on `dataset` whose process holds its lock now: running, or
        still starting (loading the data it is about to train on)."""
        out = []
        for run_id in self.ws.run_ids():
            pid = lock_holder(self.ws.run(run_id).lock)          # the liveness rule, and cheap: first
            if pid is not None:
                st = self.get(run_id)
                if st is not None and st.dataset == dataset:
                    out.append((run_id, pid or None))
        return out


def new_run_id(model: str, existing: Iterable[str], stamp: str | None = None) -> str:
    """`<model>-<mmdd-HHMMSS>` (with -2, -3, ... when taken). The dataset is in the run's config."""
    import time
    stamp = stamp or time.strftime("%m%d-%H%M%S")
    base = f"{model}-{stamp}"[:60]
    taken = set(existing)
    rid, n = base, 1
    while rid in taken:
        n += 1
        rid = f"{base}-{n}"
    return rid


def list_runs(ws: Workspace) -> list[RunState]:
    """Every run of the workspace, read once (the CLI and the benchmarks)."""
    return RunStore(ws).refresh()


def read_run(ws: Workspace, run_id: str) -> RunState:
    st = RunStore(ws).get(run_id)
    if st is None:
        from engine.core.errors import InputError
        raise InputError(f"run {run_id!r} not found in {ws.runs_dir}")
    return st
