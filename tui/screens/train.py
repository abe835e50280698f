"""Train: a form (dataset, model and its hyperparameters, epochs, batch size, loss, device) that
starts `engine train` as a child process, and the live view of a run: loss per step, validation
Recall@10 / NDCG@10 per epoch with the best epoch marked, speed, ETA, GPU memory, errors, log."""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Log, Select, Static
from textual.worker import get_current_worker

from engine.data.artifacts import REQUIRED_STAGES
from tui import jobs as J
from tui.screens.base import BaseScreen
from tui.state import (RUN_STYLE, FormError, RunState, changed_params, dataset_infos, effective_defaults,
                       fmt_bar, new_run_id, parse_int, parse_param)
from tui.widgets.charts import Chart, ChartData, Series

LOSSES = ("ce", "sampled", "bpr")
DEVICES = ("auto", "cpu", "cuda")
CHOICES = {"readout": ("attention", "mean", "max", "last"), "graph_mode": ("transitions", "cooc"),
           "weighting": ("div", "linear", "same", "log", "quadratic"),
           "score_weighting": ("div", "linear", "same", "log", "quadratic")}
CPU_EPOCHS = 3


def _row(label: str, widget: Widget, tooltip: str | None = None) -> Horizontal:
    lab = Label(label, classes="form-label")
    if tooltip:
        lab.tooltip = tooltip
    return Horizontal(lab, widget, classes="form-row")


class TrainScreen(BaseScreen):
    MODE = "train"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start"),
        Binding("ctrl+t", "stop", "Stop"),
        Binding("ctrl+o", "reopen", "Open run"),
        Binding("ctrl+r", "reset_params", "Defaults"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.datasets: dict[str, Any] = {}
        self._params_for: tuple | None = None
        self._shown: tuple = ()
        self._log_key: tuple = ()
        self._params_lock = asyncio.Lock()
        self._ds_opts: list[tuple[str, str]] = []

    # ---- layout --------------------------------------------------------------------------------
    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="train-main"):
            with VerticalScroll(id="train-form"):
                yield _row("dataset", Select([], id="f-dataset", compact=True, prompt="(no dataset)"))
                yield _row("model", Select([], id="f-model", compact=True, prompt="loading models..."))
                yield Static("", id="model-desc")
                yield _row("epochs", Input("", id="f-epochs", compact=True, type="integer"))
                yield _row("batch size", Input("512", id="f-batch", compact=True, type="integer"))
                yield _row("loss", Select([(x, x) for x in LOSSES], value="ce", allow_blank=False, id="f-loss",
                                          compact=True))
                yield _row("device", Select([(x, x) for x in DEVICES], value="auto", allow_blank=False,
                                            id="f-device", compact=True))
                yield Static("detecting devices...", id="device-info")
                yield Static("hyperparameters (defaults shown)", id="params-title")
                yield Vertical(id="params")
                with Horizontal(id="train-buttons"):
                    yield Button("Start ^s", id="start", variant="primary", compact=True)
                    yield Button("Stop ^t", id="stop", variant="error", compact=True)
            with Vertical(id="train-live"):
                yield Static("", id="run-head")
                yield Static("", id="run-error")
                with Horizontal(id="train-charts"):
                    yield Chart(ChartData(title="training loss per step", xlabel="step",
                                          empty_text="the loss curve appears when training starts"),
                                id="loss-chart")
                    yield Chart(ChartData(title="validation per epoch", xlabel="epoch",
                                          empty_text="validation Recall@10 and NDCG@10 after each epoch"),
                                id="val-chart")
                yield Log(id="run-log", max_lines=200)

    def on_mount(self) -> None:
        from engine.config import TrainConfig
        d = TrainConfig()
        self.query_one("#f-epochs", Input).value = str(d.epochs)
        self.query_one("#f-batch", Input).value = str(d.batch_size)
        self.query_one("#run-error").display = False
        self.sapp.registry_signal.subscribe(self, lambda _: self._registry_ready())
        self.sapp.data_signal.subscribe(self, lambda _: self.load_datasets())
        self.set_interval(0.3, self._refresh_run)
        self.load_datasets()
        self._registry_ready()
        self._refresh_run(force=True)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.load_datasets()
        self._refresh_run(force=True)

    def guide_text(self) -> str | None:
        return self.sapp.guide

    # ---- datasets and registry -------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="train-ds", exit_on_error=False)
    def load_datasets(self) -> None:
        try:
            infos = dataset_infos(self.sapp.ws)
        except Exception:
            infos = []
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._set_datasets, infos)

    def _set_datasets(self, infos: list) -> None:
        self.datasets = {i.name: i for i in infos}
        sel = self.query_one("#f-dataset", Select)
        current = sel.value
        opts = [(n if i.built else f"{n} (not built)", n) for n, i in self.datasets.items()]
        if opts != self._ds_opts:
            self._ds_opts = opts
            sel.set_options(opts)
            want = current if current in self.datasets else None
            if want is None:
                built = [n for n, i in self.datasets.items() if i.built]
                want = "demo" if "demo" in built else (built[0] if built else (opts[0][1] if opts else None))
            if want is not None:
                sel.value = want
        self.apply_preset()

    def _registry_ready(self) -> None:
        reg = self.sapp.registry
        sel = self.query_one("#f-model", Select)
        dev = self.sapp.device
        info = self.query_one("#device-info", Static)
        if dev is None:
            info.update(Text("detecting devices...", style="dim"))
        elif dev.get("cuda_available"):
            info.update(Text(f"GPU: {dev.get('gpu_name')} ({dev.get('gpu_memory_gb')} GB)", style="green"))
        else:
            info.update(Text(f"no GPU: training runs on the CPU (torch {dev.get('torch', '?')})", style="dim"))
        if reg is None:
            if self.sapp.registry_error:
                sel.set_options([])
                self.query_one("#model-desc", Static).update(Text(self.sapp.registry_error, style="red"))
            return
        if not sel._options or len(sel._options) <= 1:      # first time: fill
            names = list(reg)
            sel.set_options([(f"{n} ({reg[n]['kind']})" if reg[n]["kind"] == "baseline" else n, n) for n in names])
            sel.value = "graph_transformer" if "graph_transformer" in reg else names[0]
            if dev is not None and not dev.get("cuda_available"):
                self.query_one("#f-epochs", Input).value = str(CPU_EPOCHS)
        self.apply_preset()
        self.call_later(self._rebuild_params)

    def apply_preset(self) -> None:
        """The guided start: dataset demo, a CPU-friendly model and epochs (set by the app)."""
        p = self.sapp.train_preset
        if not p or self.sapp.registry is None or p.get("dataset") not in self.datasets:
            return
        self.sapp.train_preset = None
        self.query_one("#f-dataset", Select).value = p["dataset"]
        if p.get("model") in self.sapp.registry:
            self.query_one("#f-model", Select).value = p["model"]
        if p.get("epochs"):
            self.query_one("#f-epochs", Input).value = str(p["epochs"])
        self.query_one("#start", Button).focus()
        self.refresh_guide()

    # ---- hyperparameters -----------------------------------------------------------------------
    def _spec(self) -> dict | None:
        reg = self.sapp.registry or {}
        m = self.query_one("#f-model", Select).value
        return reg.get(m) if isinstance(m, str) else None

    def _defaults(self) -> dict[str, Any]:
        spec = self._spec()
        if spec is None:
            return {}
        dev = self.query_one("#f-device", Select).value
        return effective_defaults(spec["defaults"], spec["cpu_overrides"], str(dev),
                                  bool((self.sapp.device or {}).get("cuda_available")))

    @on(Select.Changed, "#f-model")
    @on(Select.Changed, "#f-device")
    def _model_or_device_changed(self) -> None:
        self.call_later(self._rebuild_params)

    async def _rebuild_params(self, force: bool = False) -> None:
        async with self._params_lock:      # model and device can change in quick succession
            await self._rebuild_params_locked(force)

    async def _rebuild_params_locked(self, force: bool) -> None:
        spec = self._spec()
        model = self.query_one("#f-model", Select).value
        defaults = self._defaults()
        key = (model, tuple(sorted((k, str(v)) for k, v in defaults.items())))
        if key == self._params_for and not force:
            return
        box = self.query_one("#params", Vertical)
        await box.remove_children()
        desc = self.query_one("#model-desc", Static)
        if spec is None:
            desc.update("")
            self._params_for = key
            return
        desc.update(Text(spec["description"], style="dim"))
        rows = []
        for k, v in defaults.items():
            val = ("true" if v else "false") if isinstance(v, bool) else str(v)
            if k in CHOICES and val in CHOICES[k]:
                w: Widget = Select([(c, c) for c in CHOICES[k]], value=val, allow_blank=False, compact=True,
                                   id=f"p-{k}")
            else:
                w = Input(val, compact=True, id=f"p-{k}", placeholder=val)
            rows.append(_row(k, w, tooltip=f"default {val}"))
        if not rows:
            rows.append(Static("(no hyperparameters)", classes="dim"))
        await box.mount_all(rows)
        baseline = spec["kind"] == "baseline"
        for wid in ("#f-epochs", "#f-batch", "#f-loss"):
            self.query_one(wid).disabled = baseline
        preset = bool(spec["cpu_overrides"]) and all(defaults.get(k) == v for k, v in spec["cpu_overrides"].items())
        self.query_one("#params-title", Static).update(
            "hyperparameters" + (" (CPU preset)" if preset else "") if not baseline else "parameters (baseline)")
        self._params_for = key

    def _param_values(self) -> dict[str, str]:
        out = {}
        for k in self._defaults():
            try:
                w = self.query_one(f"#p-{k}")
            except Exception:
                continue
            v = w.value if isinstance(w, (Input, Select)) else None
            out[k] = "" if v is None or v is Select.NULL else str(v)
        return out

    def action_reset_params(self) -> None:
        self.call_later(self._rebuild_params, True)
        self.notify("hyperparameters reset to the model's defaults", timeout=2)

    # ---- start / stop --------------------------------------------------------------------------
    def form_values(self) -> dict:
        """The form as train arguments; raises FormError with a message for the user."""
        reg = self.sapp.registry
        if reg is None:
            raise FormError("the model list is still loading (a few seconds after start)"
                            if not self.sapp.registry_error else f"no models: {self.sapp.registry_error}")
        ds = self.query_one("#f-dataset", Select).value
        if not isinstance(ds, str) or not ds:
            raise FormError("no dataset: generate the demo or import a file on the Datasets screen (F2)")
        info = self.datasets.get(ds)
        model = self.query_one("#f-model", Select).value
        if not isinstance(model, str) or model not in reg:
            raise FormError("choose a model")
        spec = reg[model]
        options: dict[str, Any] = {}
        if spec["kind"] != "baseline":
            options["epochs"] = parse_int(self.query_one("#f-epochs", Input).value, "epochs")
            options["batch_size"] = parse_int(self.query_one("#f-batch", Input).value, "batch size")
            options["loss"] = self.query_one("#f-loss", Select).value
        device = self.query_one("#f-device", Select).value
        if device == "cuda" and self.sapp.device is not None and not self.sapp.device.get("cuda_available"):
            raise FormError("device cuda: no GPU was detected here; choose auto or cpu")
        options["device"] = device
        defaults = self._defaults()
        values = self._param_values()
        for k, text in values.items():
            parse_param(k, text, defaults[k])      # the first bad value raises
        params = changed_params(values, defaults)
        if info is None:
            raise FormError(f"dataset {ds} is gone; pick another")
        need = REQUIRED_STAGES["baseline" if spec["kind"] == "baseline" else "gnn"]
        missing = [s for s in need if info.state_of(s) != "done"]
        if missing:
            raise FormError(f"dataset {ds} is not built ({', '.join(f'{s}: {info.state_of(s)}' for s in missing)}); "
                            f"build it on the Datasets screen (F2, ctrl+b)")
        if ds in self.sapp.jobs.busy_datasets():
            raise FormError(f"dataset {ds} is being built right now (F3); wait for it to finish")
        return {"dataset": ds, "model": model, "options": options, "params": params}

    def action_start(self) -> None:
        try:
            v = self.form_values()
        except FormError as e:
            self.error(str(e))
            return
        run_id = new_run_id(v["model"], v["dataset"], self.sapp.ws.run_ids())
        others = self.sapp.jobs.running("train")
        args = J.train_args(v["dataset"], v["model"], run_id, v["options"], v["params"])
        job = self.sapp.start_job("train", args, f"train {v['model']} on {v['dataset']}", dataset=v["dataset"],
                                  run_id=run_id)
        if job is None:
            return
        job.dataset = None      # a training run does not make its dataset busy
        if others:
            self.notify(f"{len(others)} other run(s) are training at the same time", severity="warning")
        if self.sapp.guide:
            self.sapp.guide = ("Step 3 of 3: training. When it finishes, press F6 (Recommend) and type item "
                               "ids or pick popular items.")
            self.refresh_guide()
        self._refresh_run(force=True)

    @on(Button.Pressed, "#start")
    def start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#stop")
    def stop_pressed(self) -> None:
        self.action_stop()

    def action_stop(self) -> None:
        rid = self.sapp.current_run
        st = self.sapp.runs_live.get(rid or "")
        if rid is None or st is None:
            self.error("no run to stop: start one with ctrl+s")
            return
        if st.finished:
            self.notify(f"run {rid} is not running ({st.status})", timeout=3)
            return
        job = self.sapp.jobs.job_for_run(rid)
        if job is not None and job.status == "stopping":
            if self.sapp.jobs.kill_now(job):
                self.notify(f"killed run {rid} (SIGKILL); its last checkpoint is the last completed one",
                            severity="warning", timeout=5)
            return
        if self.sapp.stop_run(rid):
            self.notify(f"stopping run {rid}: it saves last.pt and ends as 'stopped' (ctrl+t again kills it)",
                        timeout=5)
        else:
            self.error(f"run {rid}: its process is not running any more")

    def action_reopen(self) -> None:
        self.list_runs_worker()

    @work(thread=True, exclusive=True, group="train-runs", exit_on_error=False)
    def list_runs_worker(self) -> None:
        from engine.runs import list_runs
        try:
            runs = list_runs(self.sapp.ws)
        except Exception as e:
            self.app.call_from_thread(self.error, f"could not list runs: {e}")
            return
        rows = [{"run_id": r.run_id, "status": r.status, "created": r.created} for r in runs]
        running = sorted((r for r in rows if r["status"] == "running"), key=lambda r: r["created"], reverse=True)
        rest = sorted((r for r in rows if r["status"] != "running"), key=lambda r: r["created"], reverse=True)
        self.app.call_from_thread(self._pick_run, running + rest)

    def _pick_run(self, rows: list[dict]) -> None:
        from tui.screens.modals import OpenRunScreen

        def done(rid: str | None) -> None:
            if rid:
                self.sapp.open_run(rid)
                self._refresh_run(force=True)
        self.app.push_screen(OpenRunScreen(rows), done)

    # ---- the live view -------------------------------------------------------------------------
    def _refresh_run(self, force: bool = False) -> None:
        rid = self.sapp.current_run
        st = self.sapp.runs_live.get(rid or "")
        job = self.sapp.jobs.job_for_run(rid) if rid else None
        if job is not None and job.status == "detached":
            self.sapp.jobs.read_stderr(job)
        key = (rid, st.version if st else -1, job.status if job else None,
               job._stderr_pos if job else 0)
        if key == self._shown and not force:
            return
        self._shown = key
        head = self.query_one("#run-head", Static)
        err = self.query_one("#run-error", Static)
        if st is None:
            head.update(Text("No run yet. Fill the form and press ctrl+s to train; ctrl+o re-opens an earlier "
                             "or detached run.", style="dim"))
            err.display = False
            self._update_charts(None)
            self._update_log(job)
            return
        head.update(self._head_text(st, job))
        if st.error:
            t = Text()
            t.append(f"{st.error_kind or 'error'}: ", style="bold red")
            t.append(st.error[:400], style="red")
            if st.suggestion:
                t.append(f"\nsuggestion: {st.suggestion}", style="yellow")
            err.update(t)
            err.display = True
        else:
            err.display = False
        self._update_charts(st)
        self._update_log(job)

    def _head_text(self, st: RunState, job: Any) -> Text:
        t = Text()
        t.append(f"{st.run_id} ", style="bold")
        status = st.status
        if job is not None and job.status == "stopping":
            status = "stopping"
        t.append(status, style=RUN_STYLE.get(st.status, "yellow"))
        frac, desc = st.progress()
        t.append("  ")
        t.append(fmt_bar(frac, 12 if self.size.width < 100 else 20) + " ")
        if frac is not None:
            t.append(f"{frac * 100:3.0f}% ")
        t.append(desc, style="dim")
        t.append("\n")
        stats = [(k, v) for k, v in st.stats_lines() if k not in ("status", "model", "dataset")]
        for i, (k, v) in enumerate(stats):
            if i:
                t.append(" | ", style="dim")
            t.append(f"{k} ", style="dim")
            t.append(v)
        return t

    def _update_charts(self, st: RunState | None) -> None:
        loss = self.query_one("#loss-chart", Chart)
        val = self.query_one("#val-chart", Chart)
        if st is None:
            loss.update_data(ChartData(title="training loss per step", empty_text="no run"))
            val.update_data(ChartData(title="validation per epoch", empty_text="no run"))
            return
        loss.update_data(ChartData(title="training loss per step", xlabel="step",
                                   series=[Series("", list(st.steps), list(st.losses))],
                                   empty_text="waiting for the first steps" if not st.finished else
                                   "no training steps (baselines have none)"))
        best = [float(st.best_epoch)] if st.best_epoch and len(st.epoch_x) > 1 else []
        title = "validation per epoch" + (f" (best epoch {st.best_epoch})" if st.best_epoch else "")
        val.update_data(ChartData(title=title, xlabel="epoch", vlines=best,
                                  series=[Series("Recall@10", list(st.epoch_x), list(st.val_recall), marker="dot"),
                                          Series("NDCG@10", list(st.epoch_x), list(st.val_ndcg), marker="dot")],
                                  empty_text="validation after the first epoch"))

    def _update_log(self, job: Any) -> None:
        log = self.query_one("#run-log", Log)
        log.display = job is not None and bool(job.stderr_tail)
        if job is None:
            if self._log_key:
                log.clear()
                self._log_key = ()
            return
        key = (job.id, job._stderr_pos, len(job.stderr_tail))
        if key == self._log_key:
            return
        self._log_key = key
        log.clear()
        log.write_lines(list(job.stderr_tail)[-200:])
