"""Runs: every run of the workspace in a sortable table; select several (space) to compare their
curves on one chart; open a run's config and events. Runs come from the engine's run store (the
fold `sessrec runs` uses too), which reads each events file once and then only what is appended."""

from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from engine.core.schema import ModelKind
from engine.runs import RunState
from tui.format import RUN_STYLE, fmt_duration, fmt_num, sort_rows
from tui.messages import RunsChanged
from tui.screens.base import BaseScreen
from tui.widgets.charts import Chart, ChartData, Series

METRICS = (("val_recall", "validation Recall@10 per epoch"), ("val_ndcg", "validation NDCG@10 per epoch"),
           ("loss", "training loss per step"))
RUN_COLUMNS = (
    ("run", "run_id"), ("model", "model"), ("dataset", "dataset"), ("status", "status"),
    ("epochs", "epochs_run"), ("val R@10", "val_recall"), ("val N@10", "val_ndcg"),
    ("test last", "test_last"), ("test pref", "test_prefixes"), ("time", "seconds"),
    ("device", "device"),
)


def short_run_id(run_id: str, model: str | None) -> str:
    """Run ids are `<model>-<time>[-n]`; the table has a model column, so it shows the rest."""
    if model and run_id.startswith(f"{model}-") and len(run_id) > len(model) + 1:
        return run_id[len(model) + 1:]
    return run_id


def run_row(r: RunState) -> dict[str, Any]:
    """A run as sortable values (keys of RUN_COLUMNS)."""
    return {"run_id": r.run_id, "model": r.model or "?", "dataset": r.dataset or "?", "status": str(r.status),
            "epochs_run": r.epochs_run, "epochs": r.epochs, "val_recall": r.metric("val"),
            "val_ndcg": r.metric("val", "ndcg@10"), "test_last": r.metric("test_last"),
            "test_prefixes": r.metric("test_prefixes"), "seconds": r.seconds, "device": r.device,
            "created": r.created, "kind": r.kind, "error": r.error, "refit_of": r.refit_of}


def run_cells(row: dict) -> list[str]:
    epochs, total = row.get("epochs_run") or 0, row.get("epochs")
    if row.get("kind") != ModelKind.GNN:          # baselines and hybrids have no epochs
        ep = "-"
    else:
        ep = f"{epochs}/{total}" if total else str(epochs)
    return [short_run_id(row["run_id"], row["model"]), row["model"], row["dataset"], row["status"], ep,
            fmt_num(row.get("val_recall")), fmt_num(row.get("val_ndcg")), fmt_num(row.get("test_last")),
            fmt_num(row.get("test_prefixes")), fmt_duration(row.get("seconds")), row.get("device") or "-"]


class RunsScreen(BaseScreen):
    MODE = "runs"
    TITLE_TEXT = "Runs"
    BINDINGS = [
        Binding("space", "toggle", "Select", key_display="space", tooltip="select runs to compare"),
        Binding("enter", "details", "Details", show=False, tooltip="config and events of the run"),
        Binding("ctrl+s", "sort", "Sort", tooltip="sort by a column (again: reverse)"),
        Binding("ctrl+g", "cycle_metric", "Metric", tooltip="compare val Recall@10, val NDCG@10 or loss"),
        Binding("ctrl+o", "open_train", "On Train", tooltip="live view and charts of the run"),
        Binding("ctrl+r", "recommend", "Recommend", tooltip="open Recommend with this run"),
        Binding("ctrl+l", "refresh", "Refresh", show=False, tooltip="read the runs folder again"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.states: dict[str, RunState] = {}
        self.marked: list[str] = []
        self.sort_key: str = "created"
        self.sort_reverse = True
        self.metric = 0
        self.cursor_run: str | None = None

    def compose_body(self) -> Iterable[Widget]:
        with Vertical(id="runs-main"):
            yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="runs-lower"):
                yield Chart(ChartData(title="compare: select runs with space"), id="compare-chart")
                yield Static("", id="run-info")

    def on_mount(self) -> None:
        t = self.query_one("#runs-table", DataTable)
        t.add_column(" ", key="mark")
        for label, key in RUN_COLUMNS:
            t.add_column(label, key=key)
        self.reload()
        t.focus()

    def on_screen_resume(self) -> None:
        self.reload()

    def on_runs_changed(self, _: RunsChanged) -> None:
        self.reload()

    def reload(self) -> None:
        self.load_worker()

    @work(thread=True, exclusive=True, group="runs-load", exit_on_error=False)
    def load_worker(self) -> None:
        states = self.controller.list_runs()
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, states)

    def _show(self, states: list[RunState]) -> None:
        self.states = {s.run_id: s for s in states}
        self.rows = [run_row(s) for s in states]
        self.marked = [m for m in self.marked if m in self.states]
        self._fill()

    def _fill(self) -> None:
        t = self.query_one("#runs-table", DataTable)
        rows = sort_rows(self.rows, self.sort_key, self.sort_reverse)
        keep = self.cursor_run
        t.clear()
        for r in rows:
            cells: list[Any] = run_cells(r)
            cells[3] = Text(cells[3], style=RUN_STYLE.get(r["status"], ""))
            mark = Text("[x]", style="bold cyan") if r["run_id"] in self.marked else Text("[ ]", style="dim")
            t.add_row(mark, *cells, key=r["run_id"])
        ids = [r["run_id"] for r in rows]
        if keep in ids:
            t.move_cursor(row=ids.index(keep))
        elif ids:
            self.cursor_run = ids[0]
            t.move_cursor(row=0)
        if not rows:
            self.cursor_run = None
        self._update_info()
        self._update_chart()

    @on(DataTable.RowHighlighted, "#runs-table")
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None:
            self.cursor_run = event.row_key.value
            self._update_info()
            if not self.marked:
                self._update_chart()

    @on(DataTable.RowSelected, "#runs-table")
    def selected(self, event: DataTable.RowSelected) -> None:
        self.action_details()

    @on(DataTable.HeaderSelected, "#runs-table")
    def header(self, event: DataTable.HeaderSelected) -> None:
        self._sort_by(str(event.column_key.value))

    def _row(self, run_id: str | None) -> dict | None:
        return next((r for r in self.rows if r["run_id"] == run_id), None)

    def _update_info(self) -> None:
        info = self.query_one("#run-info", Static)
        r = self._row(self.cursor_run)
        if r is None:
            info.update(Text("No runs yet. Train one on the Train screen (F4).", style="dim"))
            return
        t = Text()
        t.append(f"{r['run_id']}\n", style="bold")
        t.append(f"{r['model']} on {r['dataset']}  ")
        t.append(f"{r['status']}\n", style=RUN_STYLE.get(r["status"], ""))
        if r.get("refit_of"):
            t.append(f"refit of {r['refit_of']} (its validation chose the epochs; trained on train + "
                     f"validation)\n", style="cyan")
        for label, key in (("val R@10", "val_recall"), ("val NDCG@10", "val_ndcg"),
                           ("test R@10 last", "test_last"), ("test R@10 prefixes", "test_prefixes")):
            t.append(f"{label:<19}", style="dim")
            t.append(f"{fmt_num(r.get(key))}\n")
        if r.get("error"):
            t.append(f"error: {r['error'][:200]}\n", style="red")
        skipped = self.states[r["run_id"]].skipped_lines if r["run_id"] in self.states else 0
        if skipped:
            t.append(f"{skipped} unreadable line(s) in its events file were skipped\n", style="yellow")
        t.append(f"\n{len(self.marked)} selected to compare", style="dim")
        info.update(t)

    def _update_chart(self) -> None:
        chart = self.query_one("#compare-chart", Chart)
        key, title = METRICS[self.metric]
        ids = self.marked or ([self.cursor_run] if self.cursor_run else [])
        series = []
        for rid in ids:
            st = self.states.get(rid)
            if st is None:
                continue
            label = rid if len(ids) > 1 else ""
            if key == "loss":
                series.append(Series(label, list(st.steps), list(st.losses)))
            else:
                ys = st.val_recall if key == "val_recall" else st.val_ndcg
                series.append(Series(label, list(st.epoch_x), list(ys), marker="dot"))
        hint = "" if self.marked else " (space selects runs)"
        chart.update_data(ChartData(title=title + hint, series=series,
                                    xlabel="step" if key == "loss" else "epoch",
                                    empty_text="no curve for this run" if ids else "no runs"))

    # ---- actions -------------------------------------------------------------------------------
    def action_toggle(self) -> None:
        rid = self.cursor_run
        if not rid:
            return
        if rid in self.marked:
            self.marked.remove(rid)
        else:
            self.marked.append(rid)
        t = self.query_one("#runs-table", DataTable)
        t.update_cell(rid, "mark", Text("[x]", style="bold cyan") if rid in self.marked else Text("[ ]", style="dim"))
        self._update_info()
        self._update_chart()

    def _sort_by(self, key: str) -> None:
        if key == "mark":
            return
        if key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key, self.sort_reverse = key, key not in ("run_id", "model", "dataset", "status", "device")
        label = dict((k, lbl) for lbl, k in RUN_COLUMNS).get(key, key)
        self.notify(f"sorted by {label} ({'descending' if self.sort_reverse else 'ascending'})", timeout=2)
        self._fill()

    def action_sort(self) -> None:
        """The row cursor cycles through the metric columns (a click on a header picks one)."""
        cycle = ["val_recall", "val_ndcg", "test_last", "test_prefixes", "seconds", "model", "created"]
        nxt = cycle[(cycle.index(self.sort_key) + 1) % len(cycle)] if self.sort_key in cycle else cycle[0]
        self.sort_key, self.sort_reverse = nxt, nxt != "model"
        label = dict((k, lbl) for lbl, k in RUN_COLUMNS).get(nxt, nxt)
        self.notify(f"sorted by {label} ({'descending' if self.sort_reverse else 'ascending'}); "
                    f"click a header to choose", timeout=2)
        self._fill()

    def action_cycle_metric(self) -> None:
        self.metric = (self.metric + 1) % len(METRICS)
        self._update_chart()

    def action_details(self) -> None:
        if not self.cursor_run:
            self.error("no run selected")
            return
        from tui.dialogs.runs import RunDetailsScreen
        self.app.push_screen(RunDetailsScreen(self.controller.ws.run(self.cursor_run)))

    def action_open_train(self) -> None:
        if not self.cursor_run:
            self.error("no run selected")
            return
        if self.controller.open_run(self.cursor_run) is not None:
            self.app.call_later(self.app.action_show, "train")  # type: ignore[attr-defined]

    def action_recommend(self) -> None:
        st = self.states.get(self.cursor_run or "")
        if st is None:
            self.error("no run selected")
            return
        if not self.controller.can_recommend(st.run_id):
            self.error(f"run {st.run_id} has no checkpoint yet ({st.status}); it cannot recommend")
            return
        self.controller.prefer_source(f"run:{st.run_id}")
        self.app.call_later(self.app.action_show, "recommend")  # type: ignore[attr-defined]

    def action_refresh(self) -> None:
        self.reload()

