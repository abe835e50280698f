"""Train: a form (dataset, model and its hyperparameters, the main training settings) that starts
`engine train` as a child process, and the live view of a run: loss per step, validation Recall@10
/ NDCG@10 per epoch with the best epoch marked, speed, ETA, GPU memory, errors, log.

Every field of the form is generated from the engine's configs (`TrainConfig`, the model's config):
its widget, choices, default (the CPU preset off CUDA) and validation."""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Input, Log, Select, Static
from textual.worker import get_current_worker

from engine.core.config import TrainConfig
from engine.core.errors import InputError
from engine.core.schema import Device, RunStatus
from engine.jobs import TrainRequest
from engine.runs import RunState
from tui.format import RUN_STYLE, fmt_bar
from tui.forms import FormError, check_config, field_rows, field_widget, form_row, parse_fields, widget_text
from tui.messages import DatasetsChanged, DeviceReady, RunUpdated
from tui.run_view import stats_lines
from tui.screens.base import BaseScreen
from tui.widgets.charts import Chart, ChartData, Series

# the training settings the form shows (every other TrainConfig field keeps its default)
TRAIN_FIELDS = ("epochs", "batch_size", "lr", "loss", "device")
GPU_POLL_S = 2.0        # how often the GPUs of a running training are read (NVML)
CPU_EPOCHS = 3          # what the form proposes without a GPU: a demo run in minutes


class TrainScreen(BaseScreen):
    MODE = "train"
    TITLE_TEXT = "Train"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start", tooltip="start a run with the form's settings"),
        Binding("ctrl+t", "stop", "Stop", tooltip="stop cleanly (checkpoint kept, status stopped); again: kill"),
        Binding("ctrl+o", "reopen", "Open run", tooltip="follow a detached or earlier run from its events"),
        Binding("ctrl+r", "reset_params", "Defaults", tooltip="the model's default hyperparameters again"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.datasets: dict[str, Any] = {}       # name -> DatasetReport
        self.params_for: tuple | None = None     # (model, defaults) the hyperparameter rows show
        self._shown: tuple = ()
        self._log_key: tuple = ()
        self._params_lock = asyncio.Lock()
        self._ds_opts: list[tuple[str, str]] = []

    # ---- layout --------------------------------------------------------------------------------
    def compose_body(self) -> Iterable[Widget]:
        models = self.controller.models
        with Horizontal(id="train-main"):
            with VerticalScroll(id="train-form"):
                yield form_row("dataset", Select([], id="f-dataset", compact=True, prompt="(no dataset)"))
                yield form_row("model", Select([(n if s.trains else f"{n} ({s.kind})", n)
                                                for n, s in models.items()],
                                               value="graph_transformer", allow_blank=False, id="f-model",
                                               compact=True))
                yield Static("", id="model-desc")
                defaults = TrainConfig()
                for name in TRAIN_FIELDS:
                    spec = TrainConfig.param(name)
                    yield form_row(name.replace("_", " "), field_widget(spec, getattr(defaults, name), f"t-{name}"))
                yield form_row("workers", Input("1", id="t-workers", compact=True),
                               tip="data-parallel worker processes (torch.distributed): the batch is split "
                                   "among them; on the GPU one GPU each")
                yield form_row("GPUs", Input("auto", id="t-gpus", compact=True, placeholder="auto or 0,1"),
                               tip="auto: free GPUs chosen by the app; or the GPU indices to use, one per worker")
                yield Static("detecting devices...", id="device-info")
                yield Static("hyperparameters (defaults shown)", id="params-title")
                yield Vertical(id="params")
                with Horizontal(id="train-buttons"):
                    yield Button("Start ^s", id="start", variant="primary", compact=True)
                    yield Button("Stop ^t", id="stop", variant="error", compact=True)
            with Vertical(id="train-live"):
                yield Static("", id="run-head")
                yield Static("", id="run-gpus")
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
        self.query_one("#run-error").display = False
        self.query_one("#run-gpus").display = False
        self._gpu_job = None
        self.set_interval(0.3, self._refresh_log)
        self.set_interval(GPU_POLL_S, self._poll_gpus)
        self.load_datasets()
        # after the first refresh: every row of the form is mounted by then (and a screen that
        # is built while the app closes never gets there)
        self.call_after_refresh(self._first_view)

    async def _first_view(self) -> None:
        self._device_ready()
        await self._rebuild_params()
        self._refresh_run(force=True)

    def on_screen_resume(self) -> None:
        self.load_datasets()
        self._refresh_run(force=True)

    def guide_text(self) -> str | None:
        return self.controller.guide

    # ---- the controller's news -------------------------------------------------------------------
    def on_datasets_changed(self, _: DatasetsChanged) -> None:
        self.load_datasets()

    def on_device_ready(self, _: DeviceReady) -> None:
        self._device_ready()
        self.call_later(self._rebuild_params)

    def on_run_updated(self, msg: RunUpdated) -> None:
        if msg.run_id == self.controller.current_run:
            self._refresh_run()

    # ---- datasets and devices --------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="train-ds", exit_on_error=False)
    def load_datasets(self) -> None:
        from engine.data.report import dataset_report
        ws = self.controller.ws
        reports = [dataset_report(ws, n) for n in ws.dataset_names()]
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._set_datasets, reports)

    def _set_datasets(self, reports: list) -> None:
        self.datasets = {r.name: r for r in reports}
        sel = self.query_one("#f-dataset", Select)
        current = sel.value
        opts = [(n if r.built else f"{n} (not built)", n) for n, r in self.datasets.items()]
        if opts != self._ds_opts:
            self._ds_opts = opts
            sel.set_options(opts)
            want = current if current in self.datasets else None
            if want is None:
                built = [n for n, r in self.datasets.items() if r.built]
                want = "demo" if "demo" in built else (built[0] if built else (opts[0][1] if opts else None))
            if want is not None:
                sel.value = want
        self.action_apply_preset()

    def _device_ready(self) -> None:
        dev = self.controller.device
        info = self.query_one("#device-info", Static)
        epochs = self.query_one("#t-epochs")
        if dev is None:
            info.update(Text("detecting devices...", style="dim"))
            return
        if dev.get("cuda_available"):
            info.update(Text(f"GPU: {dev.get('gpu_name')} ({dev.get('gpu_memory_gb')} GB)", style="green"))
        else:
            info.update(Text(f"no GPU: training runs on the CPU (torch {dev.get('torch', '?')})", style="dim"))
            if widget_text(epochs) == str(TrainConfig().epochs):      # untouched: propose a short run
                epochs.value = str(CPU_EPOCHS)

    def action_apply_preset(self) -> None:
        """The guided start: the demo dataset, a CPU-friendly model and epochs."""
        p = self.controller.take_train_preset(set(self.datasets))
        if not p:
            return
        self.query_one("#f-dataset", Select).value = p["dataset"]
        if p.get("model") in self.controller.models:
            self.query_one("#f-model", Select).value = p["model"]
        if p.get("epochs"):
            self.query_one("#t-epochs").value = str(p["epochs"])
        self.query_one("#start", Button).focus()
        self.refresh_guide()

    # ---- hyperparameters -----------------------------------------------------------------------
    def _model(self) -> str:
        return str(self.query_one("#f-model", Select).value)

    def _device_type(self) -> str:
        """Where the run will go: the CPU preset holds unless it goes to CUDA."""
        dev = widget_text(self.query_one("#t-device"))
        return "cuda" if dev == Device.CUDA or (dev == Device.AUTO and self.controller.has_cuda) else "cpu"

    def _defaults(self):
        return self.controller.spec(self._model()).resolve(None, self._device_type())

    @on(Select.Changed, "#f-model")
    @on(Select.Changed, "#t-device")
    def _model_or_device_changed(self) -> None:
        self.call_later(self._rebuild_params)

    async def _rebuild_params(self, force: bool = False) -> None:
        async with self._params_lock:      # model and device can change in quick succession
            spec = self.controller.spec(self._model())
            defaults = self._defaults()
            key = (spec.name, defaults)
            if key == self.params_for and not force:
                return
            box = self.query_one("#params", Vertical)
            await box.remove_children()
            self.query_one("#model-desc", Static).update(Text(spec.description, style="dim"))
            rows: list[Widget] = field_rows(spec.config.params(), defaults.to_dict(), "p-")
            await box.mount_all(rows or [Static("(no hyperparameters)", classes="dim")])
            baseline = not spec.trains
            for name in TRAIN_FIELDS:
                if name != "device":
                    self.query_one(f"#t-{name}").disabled = baseline     # baselines, hybrids: no epochs
            preset = any(p.cpu is not None for p in spec.config.params()) and self._device_type() == "cpu"
            self.query_one("#params-title", Static).update(
                f"parameters ({spec.kind})" if baseline else "hyperparameters" + (" (CPU preset)" if preset else ""))
            self.params_for = key

    def action_reset_params(self) -> None:
        self.call_later(self._rebuild_params, True)
        self.notify("hyperparameters reset to the model's defaults", timeout=2)

    # ---- start / stop --------------------------------------------------------------------------
    def form_request(self) -> TrainRequest:
        """The form as a training request, checked by the engine's configs; FormError otherwise."""
        ds = self.query_one("#f-dataset", Select).value
        if not isinstance(ds, str) or not ds:
            raise FormError("no dataset: generate the demo or import a file on the Datasets screen (F2)")
        spec = self.controller.spec(self._model())
        baseline = not spec.trains
        texts = {n: widget_text(self.query_one(f"#t-{n}")) for n in TRAIN_FIELDS if not baseline or n == "device"}
        options = parse_fields(TrainConfig, texts)
        if options.get("device") == Device.CUDA and self.controller.device is not None \
                and not self.controller.has_cuda:
            raise FormError("device cuda: no GPU was detected here; choose auto or cpu")
        defaults = self._defaults()
        values = parse_fields(spec.config, {p.name: widget_text(self.query_one(f"#p-{p.name}"))
                                            for p in spec.config.params()}, base=defaults)
        cfg = check_config(spec.config, values, self._device_type(), f"model {spec.name!r}")
        report = self.datasets.get(ds)
        if report is None:
            raise FormError(f"dataset {ds} is gone; pick another")
        missing = report.not_done(spec.stages(cfg))
        if missing:
            raise FormError(f"dataset {ds} is not built ({', '.join(f'{s}: {report.state_of(s)}' for s in missing)}); "
                            f"build it on the Datasets screen (F2, ctrl+b)")
        if ds in self.controller.busy_datasets():
            raise FormError(f"dataset {ds} is being built right now (F3); wait for it to finish")
        workers, gpus = self._parallel(options, spec.name)
        # only what differs from the defaults: the engine applies its CPU preset to the rest
        return TrainRequest(ds, spec.name, options, cfg.changed(defaults), workers, gpus)

    def _parallel(self, options: dict[str, Any], model: str) -> tuple[int, list[int] | None]:
        """(workers, GPUs asked for or None) from the form; FormError naming the field."""
        text = self.query_one("#t-workers", Input).value.strip() or "1"
        if not text.isdigit() or int(text) < 1:
            raise FormError(f"workers: expected a whole number >= 1, got {text!r}")
        workers = int(text)
        gtext = self.query_one("#t-gpus", Input).value.strip().lower()
        gpus = None
        if gtext not in ("", "auto"):
            parts = [g.strip() for g in gtext.split(",") if g.strip()]
            if not parts or not all(g.isdigit() for g in parts) or len(set(parts)) != len(parts):
                raise FormError(f"GPUs: expected auto or distinct GPU indices like 0,1, got {gtext!r}")
            gpus = [int(g) for g in parts]
            n_gpus = int((self.controller.device or {}).get("gpu_count") or 0)
            if options.get("device") == Device.CPU or not n_gpus:
                raise FormError("GPUs: this training runs on the CPU; leave GPUs at auto")
            if max(gpus) >= n_gpus:
                raise FormError(f"GPUs: this machine has {n_gpus} GPU(s), indices 0..{n_gpus - 1}")
            if len(gpus) != workers:
                raise FormError(f"GPUs: give one per worker ({workers} worker(s), {len(gpus)} GPU(s))")
        if workers > 1:
            from engine.train.parallel import check_world  # torch: only for a data-parallel run
            cfg = TrainConfig(model=model, batch_size=int(options.get("batch_size") or TrainConfig().batch_size))
            try:
                check_world(cfg, workers, batch_field="batch size", one_worker="set workers to 1")
            except InputError as e:
                raise FormError(f"workers: {e}") from e
        return workers, gpus

    def action_start(self) -> None:
        try:
            req = self.form_request()
        except FormError as e:
            self.error(str(e))
            return
        if self.controller.start_training(req):
            self._refresh_run(force=True)

    @on(Button.Pressed, "#start")
    def start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#stop")
    def stop_pressed(self) -> None:
        self.action_stop()

    def action_stop(self) -> None:
        rid = self.controller.current_run
        st = self.controller.run_state(rid)
        if rid is None or st is None:
            self.error("no run to stop: start one with ctrl+s")
            return
        if st.finished:
            self.notify(f"run {rid} is not running ({st.status})", timeout=3)
            return
        self.notify(self.controller.stop_run(rid), timeout=5)

    def action_reopen(self) -> None:
        self.list_runs_worker()

    @work(thread=True, exclusive=True, group="train-runs", exit_on_error=False)
    def list_runs_worker(self) -> None:
        runs = sorted(self.controller.list_runs(), key=lambda r: r.created, reverse=True)
        runs.sort(key=lambda r: r.status != RunStatus.RUNNING)          # running ones first (stable)
        self.app.call_from_thread(self._pick_run, [(str(r.status), r.run_id) for r in runs])

    def _pick_run(self, rows: list[tuple[str, str]]) -> None:
        from tui.dialogs.runs import OpenRunScreen

        def done(rid: str | None) -> None:
            if rid and self.controller.open_run(rid) is not None:
                self._refresh_run(force=True)
        self.app.push_screen(OpenRunScreen(rows), done)

    # ---- the live view -------------------------------------------------------------------------
    def _refresh_run(self, force: bool = False) -> None:
        rid = self.controller.current_run
        st = self.controller.run_state(rid)
        job = self.controller.job_for_run(rid) if rid else None
        key = (rid, st.version if st else -1, st.status if st else None, job.status if job else None)
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
            return
        head.update(self._head_text(st, job))
        self._gpu_job = job if job is not None and job.running and job.gpus else None
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

    def _poll_gpus(self) -> None:
        """Utilisation and memory of the GPUs of the shown run's job (NVML, read in a thread)."""
        job = self._gpu_job
        if job is None or not job.running:
            self._show_gpus(None)
            return
        self._read_gpus(self.controller.jobs.gpu_ids(job))

    @work(thread=True, exclusive=True, group="gpus")
    def _read_gpus(self, ids: list[str]) -> None:
        from engine.core.gpu_monitor import format_readings, read_gpus
        readings = read_gpus(ids)
        self.app.call_from_thread(self._show_gpus, format_readings(readings) if readings else None)

    def _show_gpus(self, text: str | None) -> None:
        w = self.query_one("#run-gpus", Static)
        w.display = text is not None
        if text is not None:
            w.update(Text(text, style="green"))

    def _head_text(self, st: RunState, job: Any) -> Text:
        t = Text()
        t.append(f"{st.run_id} ", style="bold")
        status = "stopping" if job is not None and job.status == "stopping" else str(st.status)
        t.append(status, style=RUN_STYLE.get(st.status, "yellow"))
        frac, desc = st.progress()
        t.append("  ")
        t.append(fmt_bar(frac, 12 if self.size.width < 100 else 20) + " ")
        if frac is not None:
            t.append(f"{frac * 100:3.0f}% ")
        t.append(desc, style="dim")
        t.append("\n")
        stats = [(k, v) for k, v in stats_lines(st) if k not in ("status", "model", "dataset")]
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

    def _refresh_log(self) -> None:
        """The run's job log (stderr of the child), when this app started it."""
        rid = self.controller.current_run
        found = self.controller.run_log(rid) if rid else None
        log = self.query_one("#run-log", Log)
        if found is None:
            log.display = False
            if self._log_key:
                log.clear()
                self._log_key = ()
            return
        key, lines = found
        log.display = bool(lines)
        if key == self._log_key:
            return
        self._log_key = key
        log.clear()
        log.write_lines(lines[-200:])

