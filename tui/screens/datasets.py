"""Datasets: every dataset of the workspace, its stages, stats and distributions; generate, import,
build, rebuild, delete (each a job: an engine child process)."""

from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, DataTable, Static
from textual.worker import get_current_worker

from tui import jobs as J
from tui.screens.base import BaseScreen
from tui.state import (STATE_STYLE, DatasetInfo, Distributions, dataset_infos, distributions, fmt_bar,
                       fmt_duration, length_bars, popularity_curve, summary_rows)
from tui.widgets.charts import Chart, ChartData, Series

STATE_CHAR = {"done": "#", "stale": "~", "missing": ".", "failed": "!", "building": ">"}
STRIP_LEGEND = "stages: # done  ~ stale\n. missing  > building  ! failed"


def stage_strip(info: DatasetInfo) -> Text:
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

    def show_progress(self, jobs: list) -> None:
        """While the first dataset is generated, say so here (the button goes away)."""
        prog = self.query_one("#welcome-progress", Static)
        self.query_one("#welcome-go", Button).display = not jobs
        if not jobs:
            prog.update("")
            return
        t = Text()
        for job in jobs:
            frac, eta = job.overall()
            stage = job.current_stage or "starting"
            t.append(f"{job.title}: {stage} {fmt_bar(frac, 20)}"
                     + (f" {frac * 100:3.0f}%" if frac is not None else "")
                     + (f", about {fmt_duration(eta)} left" if eta else "") + "\n")
        t.append("F3 shows the job and its log.", style="dim")
        prog.update(t)

    def compose(self) -> Iterable[Widget]:
        from tui.state import short_path
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
    BINDINGS = [
        Binding("ctrl+n", "new_demo", "Demo"),
        Binding("ctrl+o", "import_file", "Import"),
        Binding("ctrl+b", "build", "Build"),
        Binding("ctrl+r", "rebuild", "Rebuild"),
        Binding("ctrl+x,delete", "delete", "Delete", key_display="^x"),
        Binding("ctrl+l", "refresh", "Refresh", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.infos: dict[str, DatasetInfo] = {}
        self.selected: str | None = None
        self._dist_for: str | None = None
        self._loaded = False
        self._busy_key: tuple = ()

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
        self.sapp.data_signal.subscribe(self, lambda _: self.reload())
        self.sapp.jobs_signal.subscribe(self, lambda _: self._jobs_changed())
        self.query_one("#welcome").display = False
        self.reload()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        if self._loaded:
            self.reload()

    # ---- loading -------------------------------------------------------------------------------
    def reload(self) -> None:
        self.load_infos()

    @work(thread=True, exclusive=True, group="ds-infos", exit_on_error=False)
    def load_infos(self) -> None:
        try:
            infos = dataset_infos(self.sapp.ws)
            err = None
        except Exception as e:
            infos, err = [], f"could not read the workspace: {e}"
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_infos, infos, err)

    def _show_infos(self, infos: list[DatasetInfo], err: str | None) -> None:
        self._loaded = True
        if err:
            self.error(err)
        self.infos = {i.name: i for i in infos}
        t = self.query_one("#ds-table", DataTable)
        keep = self.selected
        t.clear()
        for info in infos:
            t.add_row(info.name, stage_strip(info), key=info.name)
        empty = not infos
        welcome = self.query_one("#welcome", Welcome)
        welcome.display = empty
        welcome.show_progress(self.sapp.jobs.running())
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

    def _jobs_changed(self) -> None:
        # while a pipeline job runs, its dataset's stage states move: re-read now and then
        key = tuple(sorted((j.id, j.current_stage, (j.stages.get("pipeline") or J.StageProgress("")).done)
                           for j in self.sapp.jobs.running() if j.kind != "train"))
        if key != self._busy_key:
            self._busy_key = key
            if self.is_current:
                self.reload()
        if not self.infos:
            self.query_one("#welcome", Welcome).show_progress(self.sapp.jobs.running())

    @on(DataTable.RowHighlighted, "#ds-table")
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        name = event.row_key.value if event.row_key is not None else None
        if name and name != self.selected and name in self.infos:
            self.selected = name
            self._show_detail(self.infos[name])

    def _show_detail(self, info: DatasetInfo | None) -> None:
        title = self.query_one("#ds-title", Static)
        st = self.query_one("#stage-table", DataTable)
        st.clear()
        if info is None:
            title.update("")
            self.query_one("#ds-summary", Static).update("")
            self._set_dist(None)
            return
        busy = info.name in self.sapp.jobs.busy_datasets()
        head = Text()
        head.append(info.name, style="bold")
        head.append(f"  {info.format}  {info.source}", style="dim")
        if busy:
            head.append("  (a job is working on it: F3)", style="cyan")
        if info.error:
            head.append(f"\n{info.error}", style="red")
        title.update(head)
        for s in info.stages:
            note = Text(s.note)
            if s.error and s.state in ("failed", "stale"):
                note = Text(s.error[:70], style="red")
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
        self.query_one("#ds-summary", Static).update(summ)
        if self._dist_for != info.name or busy:
            self.load_distributions(info.name)

    @work(thread=True, exclusive=True, group="ds-dist", exit_on_error=False)
    def load_distributions(self, name: str) -> None:
        try:
            d = distributions(self.sapp.ws, name)
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
        if ds in self.sapp.jobs.busy_datasets():
            self.error(f"dataset {ds} is already being built (F3 Jobs)")
            return
        self.sapp.guide = self.sapp.guide or (
            "Step 1 of 3: the demo dataset is being generated and built (F3 shows the job). "
            "The Train screen opens when it is ready.")
        job = self.sapp.start_job("demo", J.demo_args(vals["size"], vals.get("name")),
                                  f"demo {vals['size']} -> {ds}", dataset=ds)
        if job is not None:
            self.refresh_guide()
            self.reload()

    def guide_text(self) -> str | None:
        return self.sapp.guide

    def action_new_demo(self) -> None:
        from tui.screens.modals import DemoScreen
        self.app.push_screen(DemoScreen(list(self.infos)), self._start_demo)

    def action_import_file(self) -> None:
        from tui.screens.modals import ImportScreen

        def done(vals: dict | None) -> None:
            if vals:
                self.sapp.start_job("import", J.import_args(vals["path"], vals["format"], vals["name"], vals["test"]),
                                    f"import {vals['name']} ({vals['format']})", dataset=vals["name"])
                self.reload()
        self.app.push_screen(ImportScreen(list(self.infos)), done)

    def _target(self, verb: str) -> str | None:
        if not self.selected:
            self.error(f"no dataset to {verb}: generate a demo (ctrl+n) or import a file (ctrl+o)")
            return None
        if self.selected in self.sapp.jobs.busy_datasets():
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
            self.sapp.start_job("build", J.build_args(name), f"build {name}", dataset=name)
            self.reload()

    def action_rebuild(self) -> None:
        name = self._target("rebuild")
        if not name:
            return
        from tui.screens.modals import RebuildScreen
        info = self.infos.get(name)
        stages = [s.name for s in info.stages] if info else []

        def done(force: bool | str | None) -> None:
            if force is None:
                return
            what = "all stages" if force is True else f"from {force}"
            self.sapp.start_job("build", J.build_args(name, force), f"rebuild {name} ({what})", dataset=name)
            self.reload()
        self.app.push_screen(RebuildScreen(name, stages), done)

    def action_delete(self) -> None:
        name = self._target("delete")
        if not name:
            return
        from tui.screens.modals import ConfirmScreen
        info = self.infos.get(name)
        src = f"\nIts source file stays: {info.source}" if info and not info.is_demo else ""

        def done(yes: bool | None) -> None:
            if yes:
                self.sapp.start_job("delete", J.delete_args(name), f"delete {name}", dataset=name)
        self.app.push_screen(ConfirmScreen(f"Delete dataset {name} and everything built from it?{src}\n"
                                           f"(runs trained on it stay, but cannot recommend any more)",
                                           yes="Delete (ctrl+y)", no="Keep"), done)

    def action_refresh(self) -> None:
        self.reload()
