"""Tune: the workspace's hyperparameter studies (`sessrec tune`), the trials of the selected one
(state, validation value, parameters, run id), its best configuration as the `sessrec train`
command that reproduces it, a chart of the metric per trial with the running best, and a form that
starts a study (or continues it) as a background job. The form's values are checked by the CLI's
own `tune` checks, and its training fields are generated from `TrainConfig` like the Train form's."""

from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, DataTable, Input, Select, Static
from textual.worker import get_current_worker

from engine.core.config import TrainConfig
from engine.core.errors import InputError
from engine.core.schema import ModelKind, Protocol, values
from engine.jobs import TuneRequest
from tui.format import fmt_num
from tui.forms import FormError, field_widget, form_row, parse_fields, widget_text
from tui.messages import DatasetsChanged, JobsChanged, StudiesChanged
from tui.screens.base import BaseScreen
from tui.widgets.charts import Chart, ChartData, Series

TRAIN_FIELDS = ("epochs", "device")       # fixed for every trial (the rest is tuned or default)
DEFAULT_TRIALS = 10
CPU_EPOCHS = 3
REFRESH_S = 1.0                            # while a tuning job runs


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def running_best(ys: list[float]) -> list[float]:
    out: list[float] = []
    for y in ys:
        out.append(max(out[-1], y) if out else y)
    return out


class TuneScreen(BaseScreen):
    MODE = "tune"
    TITLE_TEXT = "Tune"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start study", tooltip="start (or continue) the form's study as a job"),
        Binding("ctrl+t", "stop", "Stop study", tooltip="stop the selected study's job (its trial ends as failed)"),
        Binding("ctrl+r", "reload", "Reload", tooltip="read the studies again"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.summaries: list[dict] = []
        self.selected: str | None = None
        self.report: dict | None = None
        self._shown_studies: list = []

    # ---- layout --------------------------------------------------------------------------------
    def compose_body(self) -> Iterable[Widget]:
        from engine.core.metrics import metric_names  # numpy: not when the app starts
        from engine.tune.spaces import SPACES
        models = {n: s for n, s in self.controller.models.items() if n in SPACES}   # (not hybrid)
        with Horizontal(id="tune-main"):
            with VerticalScroll(id="tune-form"):
                yield Static("studies", classes="section")
                yield DataTable(id="studies", cursor_type="row", zebra_stripes=False)
                yield Static("new study (or continue one)", classes="section")
                yield form_row("dataset", Select([], id="u-dataset", compact=True, prompt="(no dataset)"))
                yield form_row("model", Select([(f"{n} (baseline)" if s.kind == ModelKind.BASELINE else n, n)
                                                for n, s in models.items()], value="itemknn",
                                               allow_blank=False, id="u-model", compact=True))
                yield form_row("trials", Input(str(DEFAULT_TRIALS), id="u-trials", compact=True))
                yield form_row("metric", Select([(m, m) for m in metric_names()], value="mrr@20",
                                                allow_blank=False, id="u-metric", compact=True))
                yield form_row("protocol", Select([(p, p) for p in values(Protocol)], value=Protocol.PREFIXES.value,
                                                  allow_blank=False, id="u-protocol", compact=True))
                for name in TRAIN_FIELDS:
                    spec = TrainConfig.param(name)
                    value = CPU_EPOCHS if name == "epochs" else spec.default
                    yield form_row(name, field_widget(spec, value, f"u-{name}"))
                yield form_row("study", Input("", id="u-study", compact=True, placeholder="<dataset>-<model>-<metric>"))
                with Horizontal(id="tune-buttons"):
                    yield Button("Start ^s", id="tune-start", variant="primary", compact=True)
                    yield Button("Stop ^t", id="tune-stop", variant="error", compact=True)
            with Vertical(id="tune-live"):
                yield Static("", id="study-head")
                yield DataTable(id="trials", cursor_type="row", zebra_stripes=True)
                yield Static("", id="study-best")
                yield Chart(ChartData(title="validation metric per trial", xlabel="trial",
                                      empty_text="the metric of each trial and the best so far"), id="tune-chart")

    def on_mount(self) -> None:
        self.query_one("#studies", DataTable).add_columns("done", "best", "study")
        self.query_one("#trials", DataTable).add_columns("#", "state", "value", "run", "params")
        self.set_interval(REFRESH_S, self._poll)
        self.load_datasets()
        self.load_studies()

    def on_screen_resume(self) -> None:
        self.load_datasets()
        self.load_studies()

    # ---- the controller's news -------------------------------------------------------------------
    def on_studies_changed(self, _: StudiesChanged) -> None:
        self.load_studies()

    def on_datasets_changed(self, _: DatasetsChanged) -> None:
        self.load_datasets()

    def on_jobs_changed(self, _: JobsChanged) -> None:
        self._update_head()

    def _poll(self) -> None:
        if self.controller.tuning():
            self.load_studies()

    def action_reload(self) -> None:
        self.load_studies()

    # ---- loading (thread workers: Optuna and SQLite stay off the UI thread) ------------------------
    @work(thread=True, exclusive=True, group="tune-ds", exit_on_error=False)
    def load_datasets(self) -> None:
        names = self.controller.ws.dataset_names()
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._set_datasets, names)

    def _set_datasets(self, names: list[str]) -> None:
        sel = self.query_one("#u-dataset", Select)
        current = sel.value
        sel.set_options([(n, n) for n in names])
        if current in names:
            sel.value = current
        elif names:
            sel.value = "demo" if "demo" in names else names[0]

    @work(thread=True, exclusive=True, group="tune-studies", exit_on_error=False)
    def load_studies(self) -> None:
        try:
            summaries = self.controller.studies()
            name = self.selected or (summaries[0]["study"] if summaries else None)
            report = self.controller.study_report(name) if name else None
            error = None
        except Exception as e:          # a locked or unreadable database: say so, keep going
            summaries, report, error = self.summaries, self.report, f"{type(e).__name__}: {e}"
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, summaries, report, error)

    def _show(self, summaries: list[dict], report: dict | None, error: str | None) -> None:
        self.summaries, self.report = summaries, report
        if report is not None:
            self.selected = report["study"]
        if error:
            self.error(f"studies: {error}")
        table = self.query_one("#studies", DataTable)
        rows = [(f"{s['finished']}/{s['trials']}", fmt_num(s["best"]), s["study"]) for s in summaries]
        if rows != self._shown_studies:
            self._shown_studies = rows
            table.clear()
            for r in rows:
                table.add_row(*r, key=r[2])
            if self.selected in [r[2] for r in rows]:
                table.move_cursor(row=table.get_row_index(self.selected))
        self._update_head()
        self._update_trials()

    @on(DataTable.RowSelected, "#studies")
    @on(DataTable.RowHighlighted, "#studies")
    def _study_picked(self, event) -> None:
        if isinstance(event, DataTable.RowHighlighted) and not event.data_table.has_focus:
            return                     # the table was rebuilt, not moved by the user
        key = event.row_key.value if event.row_key is not None else None
        if key and key != self.selected:
            self.selected = key
            self.load_studies()

    # ---- the selected study --------------------------------------------------------------------
    def _update_head(self) -> None:
        head = self.query_one("#study-head", Static)
        rep = self.report
        if rep is None:
            head.update(Text("No study yet. Fill the form and press ctrl+s: each trial is a training run "
                             "scored on the validation split (the test split is never read).", style="dim"))
            return
        setup = rep.get("setup") or {}
        c = rep["counts"]
        t = Text()
        t.append(f"{rep['study']} ", style="bold")
        t.append(f"{setup.get('model')} on {setup.get('dataset')}, validation {setup.get('metric')} "
                 f"({setup.get('protocol')})\n", style="")
        t.append(f"{c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed", style="dim")
        job = self.controller.job_for_study(rep["study"])
        if job is not None or rep.get("running_pid"):
            t.append(f"  running ({job.status if job else 'process ' + str(rep['running_pid'])})", style="yellow")
        head.update(t)

    def _update_trials(self) -> None:
        rep = self.report
        table = self.query_one("#trials", DataTable)
        table.clear()
        best = self.query_one("#study-best", Static)
        chart = self.query_one("#tune-chart", Chart)
        if rep is None:
            best.update("")
            chart.update_data(ChartData(title="validation metric per trial", empty_text="no study"))
            return
        for t in rep["trials"]:
            state = t["state"] + (f" @{t['pruned_at']}" if t.get("pruned_at") else "")
            table.add_row(str(t["number"]), state, fmt_num(t["value"]), t.get("run_id") or "-",
                          params_text(t["params"]), key=str(t["number"]))
        metric = (rep.get("setup") or {}).get("metric", "value")
        b = rep.get("best")
        if b:
            best.update(Text.assemble(("best ", "bold"), f"trial {b['number']}: {metric} {fmt_num(b['value'])} "
                                      f"(run {b['run_id']})\n", (b.get("command") or "", "cyan")))
        else:
            best.update(Text("no complete trial yet", style="dim"))
        done = [t for t in rep["trials"] if t["state"] == "complete" and t["value"] is not None]
        xs = [t["number"] for t in done]
        ys = [t["value"] for t in done]
        chart.update_data(ChartData(title=f"validation {metric} per trial", xlabel="trial",
                                    series=[Series(metric, xs, ys, marker="dot", scatter=True),
                                            Series("best so far", xs, running_best(ys))],
                                    empty_text="the metric of each complete trial and the best so far"))

    # ---- start / stop --------------------------------------------------------------------------
    def form_request(self) -> TuneRequest:
        """The form as a tuning request, checked as `sessrec tune` checks its flags
        (`TuneSetup.from_values`); FormError otherwise."""
        from engine.tune.setup import TuneSetup, default_name
        ds = self.query_one("#u-dataset", Select).value
        if not isinstance(ds, str) or not ds:
            raise FormError("no dataset: generate the demo or import a file on the Datasets screen (F2)")
        model = str(self.query_one("#u-model", Select).value)
        metric = str(self.query_one("#u-metric", Select).value)
        protocol = str(self.query_one("#u-protocol", Select).value)
        try:
            trials = int(widget_text(self.query_one("#u-trials")))
            if trials < 1:
                raise ValueError
        except ValueError:
            raise FormError(f"trials: expected a whole number >= 1, got {widget_text(self.query_one('#u-trials'))!r}") \
                from None
        options = parse_fields(TrainConfig, {n: widget_text(self.query_one(f"#u-{n}")) for n in TRAIN_FIELDS})
        if self.controller.spec(model).kind == ModelKind.BASELINE:
            options.pop("epochs", None)                 # baselines have no epochs
        study = widget_text(self.query_one("#u-study")).strip() or default_name(ds, model, metric)
        try:
            setup = TuneSetup.from_values(ds, model, metric, protocol, train=options)
        except InputError as e:
            raise FormError(str(e)) from None
        req = TuneRequest(setup, study, trials)
        if self.controller.job_for_study(study) is not None:
            raise FormError(f"study {study} is being tuned right now (F3); wait for it or stop it (ctrl+t)")
        return req

    def action_start(self) -> None:
        try:
            req = self.form_request()
        except FormError as e:
            self.error(str(e))
            return
        if self.controller.start_tuning(req) is not None:
            self.selected = req.study
            self.load_studies()

    @on(Button.Pressed, "#tune-start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#tune-stop")
    def _stop_pressed(self) -> None:
        self.action_stop()

    def action_stop(self) -> None:
        job = self.controller.job_for_study(self.selected) if self.selected else None
        if job is None:
            self.error("no tuning job of this app runs the selected study")
            return
        self.notify(self.controller.cancel(job), timeout=5)
