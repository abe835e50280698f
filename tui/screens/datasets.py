"""Datasets: every dataset of the workspace, its stages, stats, bad rows and distributions; generate,
import, build, rebuild, delete (each a job: an engine child process). What a dataset looks like comes
from the engine's `dataset_report` (the same text `sessrec data status` prints)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, DataTable, Static
from textual.worker import get_current_worker

from engine.core.workspace import Workspace
from engine.data.report import DatasetReport
from tui.format import STATE_STYLE, fmt_bar, fmt_duration, fmt_num, short_path
from tui.messages import DatasetsChanged, JobsChanged
from tui.screens.base import BaseScreen
from tui.widgets.charts import Chart, ChartData, Series

STATE_CHAR = {"done": "#", "stale": "~", "missing": ".", "failed": "!", "building": ">"}
STRIP_LEGEND = "stages: # done  ~ stale\n. missing  > building  ! failed"
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


def distributions(ws: Workspace, name: str) -> Distributions:
    """Item popularity (the items stage's train counts) and session lengths (sessionize)."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    d = ws.dataset(name)
    counts: list[int] = []
    hist: dict[int, int] = {}
    if d.items.exists():
        c = pq.read_table(d.items, columns=["train_count"]).column("train_count").to_numpy()
        counts = np.sort(c)[::-1].astype(int).tolist()
    if d.sessions.exists():
        col = pq.read_table(d.sessions, columns=["items"]).column("items")
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if len(lengths):
            bc = np.bincount(lengths.astype(np.int64))
            hist = {int(i): int(v) for i, v in enumerate(bc) if v}
    return Distributions(counts, hist)


def popularity_curve(counts: list[int], n: int = 60) -> tuple[list[float], list[float]]:
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


def stage_strip(info: DatasetReport) -> Text:
    """One character per stage, in pipeline order, coloured by state: '#' done, '~' stale, '.' missing,
    '>' building, '!' failed (readable without colours too), then a word for the whole."""
    t = Text()
    for s in info.stages:
        t.append(STATE_CHAR.get(s.state, "?"), style=STATE_STYLE.get(s.state, ""))
    states = {s.state for s in info.stages}
    word = ("unreadable" if info.error else "failed" if "failed" in states else "building" if "building" in states
            else "stale" if "stale" in states else "partial" if "missing" in states else "built")
    t.append(f" {word}", style=STATE_STYLE.get({"built": "done", "partial": "missing", "unreadable": "failed"}
                                               .get(word, word), ""))
    return t


class Welcome(Vertical):
    DEFAULT_CSS = """
    Welcome { height: auto; padding: 1 2; border: round $accent; }
    Welcome Button { margin-top: 1; }
    Welcome #welcome-progress { margin-top: 1; color: $text-muted; }
    """

    def show_progress(self, jobs: list, progress) -> None:
        """While the first dataset is generated, say so here (the button goes away); `progress(job)`
        gives (fraction, seconds left)."""
        prog = self.query_one("#welcome-progress", Static)
        self.query_one("#welcome-go", Button).display = not jobs
        if not jobs:
            prog.update("")
            return
        t = Text()
        for job in jobs:
            frac, eta = progress(job)
            stage = job.current_stage or "starting"
            t.append(f"{job.title}: {stage} {fmt_bar(frac, 20)}"
                     + (f" {frac * 100:3.0f}%" if frac is not None else "")
                     + (f", about {fmt_duration(eta)} left" if eta else "") + "\n")
        t.append("F3 shows the job and its log.", style="dim")
        prog.update(t)

    def compose(self) -> Iterable[Widget]:
        root = short_path(self.app.ws.root)  # type: ignore[attr-defined]
        yield Static(f"[b]The workspace {root} has no datasets yet.[/b]\n\n"
                     "Press [b]Enter[/b] to generate the [b]small demo dataset[/b] (about 22K shopping sessions "
                     "with a planted structure, RetailRocket format) and build it; it takes about a minute. "
                     "Then train a model on it (F4) and get recommendations (F6).\n\n"
                     "Or: ctrl+n for another demo size, ctrl+o to import your own log file.")
        yield Button("Generate the demo dataset (Enter)", id="welcome-go", variant="primary", compact=True)
        yield Static("", id="welcome-progress")


class DatasetsScreen(BaseScreen):
    MODE = "datasets"
    TITLE_TEXT = "Datasets"
    BINDINGS = [
        Binding("ctrl+n", "new_demo", "Demo", tooltip="generate a demo (tiny, small, full) and build it"),
        Binding("ctrl+o", "import_file", "Import", tooltip="a RetailRocket, RSC15 or Diginetica log"),
        Binding("ctrl+b", "build", "Build", tooltip="run the stages that are missing or stale"),
        Binding("ctrl+r", "rebuild", "Rebuild", tooltip="rerun a stage and everything after it"),
        Binding("ctrl+x,delete", "delete", "Delete", key_display="^x",
                tooltip="delete the dataset folder (asks first)"),
        Binding("ctrl+l", "refresh", "Refresh", show=False, tooltip="read the workspace again"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.infos: dict[str, DatasetReport] = {}
        self.selected: str | None = None
        self._dist_for: str | None = None
        self._loaded = False
        self._busy_key: tuple = ()
        self._rows_shown: list[tuple[str, str]] = []

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="ds-main"):
            with Vertical(id="ds-left"):
                yield DataTable(id="ds-table", cursor_type="row", zebra_stripes=False)
                yield Static(STRIP_LEGEND, id="ds-legend")
            with VerticalScroll(id="ds-detail"):
                yield Static("", id="ds-title")
                yield DataTable(id="stage-table", cursor_type="none", show_cursor=False)
                with Horizontal(id="ds-lower"):
                    yield Static("", id="ds-summary")
                    with Vertical(id="ds-plots"):
                        yield Chart(ChartData(title="item popularity (train count by rank)"), id="pop-chart")
                        yield Chart(ChartData(title="session length (sessions)"), id="len-chart")
        yield Welcome(id="welcome")

    def on_mount(self) -> None:
        t = self.query_one("#ds-table", DataTable)
        t.add_columns("dataset", "stages")
        t.tooltip = STRIP_LEGEND
        st = self.query_one("#stage-table", DataTable)
        st.add_columns("stage", "state", "time", "stats")
        self.query_one("#welcome").display = False
        self.reload()

    def on_screen_resume(self) -> None:
        if self._loaded:
            self.reload()

    def on_datasets_changed(self, _: DatasetsChanged) -> None:
        self.reload()

    # ---- loading -------------------------------------------------------------------------------
    def reload(self) -> None:
        self.load_infos()

    @work(thread=True, exclusive=True, group="ds-infos", exit_on_error=False)
    def load_infos(self) -> None:
        from engine.data.report import dataset_report
        ws = self.controller.ws
        # one report per dataset; a broken one carries its error and never hides the others
        infos = [dataset_report(ws, n) for n in ws.dataset_names()]
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_infos, infos)

    def _show_infos(self, infos: list[DatasetReport]) -> None:
        self._loaded = True
        self.infos = {i.name: i for i in infos}
        t = self.query_one("#ds-table", DataTable)
        keep = self.selected
        rows = [(info.name, stage_strip(info)) for info in infos]
        if [(n, strip.plain) for n, strip in rows] != self._rows_shown:
            # only when something changed: a rebuilt table flickers and sizes its columns again
            self._rows_shown = [(n, strip.plain) for n, strip in rows]
            t.clear()
            for name, strip in rows:
                t.add_row(name, strip, key=name)
        empty = not infos
        welcome = self.query_one("#welcome", Welcome)
        welcome.display = empty
        welcome.show_progress(self.controller.running_jobs(), self.controller.job_progress)
        self.query_one("#ds-main").display = not empty
        if empty:
            self.selected = None
            self._show_detail(None)
            if welcome.display:
                self.query_one("#welcome-go", Button).focus()
            return
        names = list(self.infos)
        if keep not in self.infos:
            keep = names[0]
        t.move_cursor(row=names.index(keep))
        self.selected = keep
        self._show_detail(self.infos[keep])
        if self.focused is None or isinstance(self.focused, Button):
            t.focus()

    def on_jobs_changed(self, _: JobsChanged) -> None:
        # while a pipeline job runs, its dataset's stage states move: re-read now and then
        running = self.controller.running_jobs()
        key = tuple(sorted((j.id, j.current_stage, self.controller.job_progress(j)[0] or 0.0)
                           for j in running if j.kind != "train"))
        if key != self._busy_key:
            self._busy_key = key
            if self.is_current:
                self.reload()
        if not self.infos:
            self.query_one("#welcome", Welcome).show_progress(running, self.controller.job_progress)

    @on(DataTable.RowHighlighted, "#ds-table")
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        name = event.row_key.value if event.row_key is not None else None
        if name and name != self.selected and name in self.infos:
            self.selected = name
            self._show_detail(self.infos[name])

    def _show_detail(self, info: DatasetReport | None) -> None:
        title = self.query_one("#ds-title", Static)
        st = self.query_one("#stage-table", DataTable)
        st.clear()
        if info is None:
            title.update("")
            self.query_one("#ds-summary", Static).update("")
            self._set_dist(None)
            return
        busy = info.name in self.controller.busy_datasets()
        head = Text()
        head.append(info.name, style="bold")
        kind = " folder" if info.source_kind == "folder" else ""
        head.append(f"  {info.format}{kind}  {short_path(info.source, self.controller.ws.root)}", style="dim")
        if busy:
            head.append("  (a job is working on it: F3)", style="cyan")
        if info.error:
            head.append(f"\n{info.error}", style="red")
        title.update(head)
        for s in info.stages:
            note = Text(s.note, style="red" if s.error and s.state in ("failed", "stale") else "")
            st.add_row(s.name, Text(s.state, style=STATE_STYLE.get(s.state, "")),
                       fmt_duration(s.seconds) if s.seconds is not None else "-", note)
        rows = summary_rows(info.summary)
        width = max((len(k) for k, _ in rows), default=0)
        summ = Text()
        for k, v in rows:
            summ.append(f"{k:<{width}} ", style="dim")
            summ.append(f"{v}\n")
        if not rows:
            summ.append("no stats yet: build the dataset (ctrl+b)", style="dim")
        for line in info.bad_rows:                 # skipped rows of the raw log, with line numbers
            summ.append(f"\n{line}", style="yellow")
        self.query_one("#ds-summary", Static).update(summ)
        if self._dist_for != info.name or busy:
            self.load_distributions(info.name)

    @work(thread=True, exclusive=True, group="ds-dist", exit_on_error=False)
    def load_distributions(self, name: str) -> None:
        try:
            d = distributions(self.controller.ws, name)
        except Exception:
            d = Distributions([], {})
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._set_dist_for, name, d)

    def _set_dist_for(self, name: str, d: Distributions) -> None:
        if name == self.selected:
            self._dist_for = name
            self._set_dist(d)

    def _set_dist(self, d: Distributions | None) -> None:
        pop = self.query_one("#pop-chart", Chart)
        ln = self.query_one("#len-chart", Chart)
        if d is None:
            pop.update_data(ChartData(title="item popularity"))
            ln.update_data(ChartData(title="session length"))
            return
        xs, ys = popularity_curve(d.item_counts)
        pop.update_data(ChartData(title="item popularity: train count by rank (log x)", xlog=True,
                                  series=[Series("", xs, ys)], empty_text="build the items stage to see it"))
        labels, values = length_bars(d.length_hist, 12)
        ln.update_data(ChartData(title="session length: number of sessions", bars=(labels, values),
                                 empty_text="build the sessionize stage to see it"))

    # ---- actions -------------------------------------------------------------------------------
    @on(Button.Pressed, "#welcome-go")
    def welcome_go(self) -> None:
        self._start_demo({"size": "small", "name": None, "dataset": "demo"})

    def _start_demo(self, vals: dict | None) -> None:
        if not vals:
            return
        ds = vals["dataset"]
        if ds in self.controller.busy_datasets():
            self.error(f"dataset {ds} is already being built (F3 Jobs)")
            return
        if self.controller.generate_demo(vals["size"], vals.get("name")) is not None:
            self.reload()

    def guide_text(self) -> str | None:
        return self.controller.guide

    def action_new_demo(self) -> None:
        from tui.dialogs.datasets import DemoScreen
        self.app.push_screen(DemoScreen(list(self.infos)), self._start_demo)

    def action_import_file(self) -> None:
        from tui.dialogs.datasets import ImportScreen

        def done(vals: dict | None) -> None:
            if vals:
                self.controller.import_log(vals["path"], vals["format"], vals["name"], vals["test"])
                self.reload()
        self.app.push_screen(ImportScreen(list(self.infos)), done)

    def _target(self, verb: str) -> str | None:
        if not self.selected:
            self.error(f"no dataset to {verb}: generate a demo (ctrl+n) or import a file (ctrl+o)")
            return None
        if self.selected in self.controller.busy_datasets():
            self.error(f"dataset {self.selected} is busy with another job (F3 Jobs); wait or cancel it")
            return None
        return self.selected

    def action_build(self) -> None:
        name = self._target("build")
        if name:
            info = self.infos.get(name)
            if info is not None and info.fully_built:
                self.notify(f"dataset {name}: every stage is up to date (ctrl+r rebuilds)", timeout=4)
                return
            self.controller.build(name)
            self.reload()

    def action_rebuild(self) -> None:
        name = self._target("rebuild")
        if not name:
            return
        from tui.dialogs.datasets import RebuildScreen
        info = self.infos.get(name)
        stages = [s.name for s in info.stages] if info else []

        def done(force: bool | str | None) -> None:
            if force is None:
                return
            self.controller.build(name, force)
            self.reload()
        self.app.push_screen(RebuildScreen(name, stages), done)

    def action_delete(self) -> None:
        name = self._target("delete")
        if not name:
            return
        from tui.dialogs.base import ConfirmScreen
        info = self.infos.get(name)
        src = f"\nIts source {info.source_kind} stays: {info.source}" if info and not info.is_demo else ""

        def done(yes: bool | None) -> None:
            if yes:
                self.controller.delete(name)
        self.app.push_screen(ConfirmScreen(f"Delete dataset {name} and everything built from it?{src}\n"
                                           f"(runs trained on it stay, but cannot recommend any more)",
                                           yes="Delete (ctrl+y)", no="Keep"), done)

    def action_refresh(self) -> None:
        self.reload()
