"""Serve: run `sessrec serve` on a finished run or a baseline (or two: an A/B test) as a background job and watch it: its
address, a ready-to-paste `curl` line, live requests/s, p50/p99 latency and 4xx/5xx errors from its
Prometheus /metrics (polled every second in a thread worker), the model and reload state from
/health, and a reload with another run (POST /admin/reload) when a better one (same model and
dataset, higher validation Recall@10) has finished. An A/B server's arms are shown live (sessions,
lists, CTR with its interval, conversions, the sequential test's verdict; tui/ab_view.py), read from
its experiment's logs in the workspace.

The API key is typed in a password field and reaches the server in its environment
(SESSREC_API_KEY), never on its command line (argv is visible in `ps` and kept in the job record).
Each server the app starts also gets a fresh admin-only key (SESSREC_ADMIN_KEY, same way): Reload
works without an API key, and nobody else can reload the server.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, DataTable, Input, Select, Static

from engine.core.errors import InputError
from engine.core.schema import JobStatus, Runtime, Search, values
from engine.core.target import Target
from engine.jobs import Job, ServeRequest
from engine.serve.security import MIN_KEY_CHARS, check_key, is_loopback
from tui.controller import SERVE_ADMIN_KEY_ENV, SERVE_KEY_ENV
from tui.format import fmt_duration
from tui.forms import FormError, form_row
from tui.messages import DatasetsChanged, JobsChanged, RunsChanged
from tui.screens.base import BaseScreen
from tui.ab_view import read_report
from tui.serve_view import (
    MAIN_ENDPOINT,
    copy_line,
    curl_line,
    head_text,
    list_targets,
    names_line,
    sample_items,
    sample_names,
    stats_rows,
)
from tui.widgets.arms import ArmsPanel
from tui.widgets.charts import Chart, ChartData, Series

POLL_S = 1.0                  # how often /metrics and /health are read while a server runs
HISTORY = 120                 # points of the requests/s chart (two minutes)
MAX_WORKERS = 64


class ServeScreen(BaseScreen):
    MODE = "serve"
    TITLE_TEXT = "Serve"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start server", tooltip="serve the chosen model over HTTP (a background job)"),
        Binding("ctrl+t", "stop", "Stop server", tooltip="stop the server (SIGTERM: it finishes requests in flight)"),
        Binding("ctrl+r", "reload", "Reload", tooltip="load another run into the running server (POST /admin/reload)"),
        Binding("ctrl+y", "copy_curl", "Copy curl", tooltip="copy the curl line (with the API key) to the clipboard"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[tuple[str, str]] = []
        self.job_id: str | None = None            # the server this screen shows
        self.snapshot: Any = None                 # the last MetricsSnapshot
        self.health: dict | None = None
        self.report: dict | None = None           # an A/B server's experiment report
        self.rows: list[tuple[str, ...]] = []
        self.rps: deque[tuple[float, float]] = deque(maxlen=HISTORY)
        self.items: list[int] = []
        self._items_for: str | None = None
        self._prev: tuple[float, Any] | None = None   # (clock, snapshot) of the previous scrape
        self._polling = False
        self._t0: float | None = None
        self._told_newer: set[str] = set()
        self.clock = time.monotonic               # tests make the intervals exact

    # ---- layout --------------------------------------------------------------------------------
    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="serve-main"):
            with VerticalScroll(id="serve-form"):
                yield Static("serve a model over HTTP", classes="section")
                yield form_row("model", Select([], id="s-target", compact=True, prompt="(nothing to serve)"))
                yield form_row("A/B: arm B", Select([], id="s-arm-b", compact=True, prompt="(none: one model)"),
                               "a second model beside the first (arm A), half the sessions each: a session_id's "
                               "hash picks its arm; clicks come back on POST /feedback")
                yield form_row("host", Input("127.0.0.1", id="s-host", compact=True))
                yield form_row("port", Input("8000", id="s-port", compact=True))
                yield form_row("runtime", Select([(r, r) for r in values(Runtime)], value="torch", allow_blank=False,
                                                 id="s-runtime", compact=True),
                               "torch (eager); compiled: the encoder compiled by AOTInductor, fastest, needs a C++ "
                               "compiler; onnx: ONNX Runtime. Exports are built and checked when missing (~1 min)")
                yield form_row("search", Select([(s, s) for s in values(Search)], value="auto", allow_blank=False,
                                                id="s-search", compact=True),
                               "top-k over every item (exact) or a compressed scan checked against it (pq); "
                               "auto: pq from 20,000 items")
                yield form_row("workers", Input("1", id="s-workers", compact=True),
                               "server processes (each loads the model; metrics and reloads are shared)")
                yield form_row("API key", Input("", id="s-key", password=True, compact=True,
                                                placeholder="(none)"),
                               "clients send it as X-API-Key (every endpoint but /health); needed to listen "
                               "beyond loopback; given to the server in its environment")
                with Horizontal(id="serve-buttons"):
                    yield Button("Start ^s", id="serve-start", variant="primary", compact=True)
                    yield Button("Stop ^t", id="serve-stop", variant="error", compact=True)
                    yield Button("Reload ^r", id="serve-reload", compact=True)
                yield Static("The key goes to the server in its environment (SESSREC_API_KEY), never on "
                             "its command line.", id="serve-note", classes="dim")
            with Vertical(id="serve-live"):
                yield Static("", id="serve-head")
                yield Static("", id="serve-better")
                yield Static("", id="serve-curl")
                yield DataTable(id="serve-stats", cursor_type="none", zebra_stripes=False, show_cursor=False)
                yield ArmsPanel(id="serve-arms")
                yield Chart(ChartData(title="requests/s", empty_text="requests per second of /recommend"),
                            id="serve-chart")

    def on_mount(self) -> None:
        t = self.query_one("#serve-stats", DataTable)
        # fixed widths: the columns do not jump every second; 45 columns in all (80-column terminal)
        for label, width in (("endpoint", 10), ("req/s", 5), ("p50 ms", 6), ("p99 ms", 6), ("4xx", 3), ("5xx", 3)):
            t.add_column(label, key=label, width=width)
        self.set_interval(POLL_S, self.poll)
        self.load_targets()
        self._adopt_job()
        self._show()

    def on_screen_resume(self) -> None:
        self.load_targets()

    def on_runs_changed(self, _: RunsChanged) -> None:
        self.load_targets()

    def on_datasets_changed(self, _: DatasetsChanged) -> None:
        self.load_targets()

    def on_jobs_changed(self, _: JobsChanged) -> None:
        self._adopt_job()
        self._show()

    # ---- targets -------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="serve-targets", exit_on_error=False)
    def load_targets(self) -> None:
        try:
            targets = list_targets(self.controller)
        except Exception as e:
            self.app.call_from_thread(self.error, f"could not list runs and datasets: {e}")
            return
        self.app.call_from_thread(self._set_targets, targets)

    def _set_targets(self, targets: list[tuple[str, str]]) -> None:
        if targets != self.targets:
            self.targets = targets
            sel = self.query_one("#s-target", Select)
            cur = sel.value
            sel.set_options(targets)
            arm_b = self.query_one("#s-arm-b", Select)
            b = arm_b.value
            arm_b.set_options(targets)
            keys = [k for _, k in targets]
            if b in keys:
                arm_b.value = b
            if cur in keys:
                sel.value = cur
            elif targets:
                sel.value = keys[0]
        self._check_newer()

    # ---- the server's job ------------------------------------------------------------------------
    @property
    def job(self) -> Job | None:
        return self.controller.jobs.jobs.get(self.job_id) if self.job_id else None

    def _adopt_job(self) -> None:
        """Show the app's running server (one started elsewhere, e.g. from the palette, or before
        this screen opened); keep showing an ended one until another starts."""
        active = self.controller.serve_job()
        if active is not None and active.id != self.job_id:
            self.job_id = active.id
            self._reset_live()

    def _reset_live(self) -> None:
        self.snapshot, self.health, self._prev, self._t0, self.report = None, None, None, None, None
        self.rows = []
        self.rps.clear()

    def url(self) -> str | None:
        job = self.job
        if job is None or not job.running or not job.serving:
            return None
        return job.serving.get("url")

    def api_key(self) -> str | None:
        job = self.job
        return job.env.get(SERVE_KEY_ENV) if job is not None else None

    def admin_key(self) -> str | None:
        """The key /admin/reload takes: the API key, else the admin-only key the app gave the server."""
        job = self.job
        return (self.api_key() or job.env.get(SERVE_ADMIN_KEY_ENV)) if job is not None else None

    # ---- polling (a thread worker; at most one at a time) -----------------------------------------
    def poll(self) -> None:
        url = self.url()
        if url is None or self._polling:
            return
        self._polling = True
        self._scrape(url, self.api_key())

    @work(thread=True, group="serve-poll", exit_on_error=False)
    def _scrape(self, url: str, key: str | None) -> None:
        from engine.serve.scrape import fetch_health, fetch_metrics
        try:
            snap = fetch_metrics(url, key)
            health = fetch_health(url, key)
            now = self.clock()
            rows = None
            if snap is not None:
                prev_t, prev = self._prev if self._prev is not None else (None, None)
                rows = stats_rows(prev, snap, now - prev_t if prev_t is not None else 0.0) if prev is not None \
                    else stats_rows(None, snap, 0.0)
                self._prev = (now, snap)
            items = self.items
            job = self.job
            dataset = (health or {}).get("dataset") or ((job.serving or {}).get("dataset") if job else None)
            if dataset and dataset != self._items_for:
                items = sample_items(self.controller.ws, dataset)
                self.item_names = sample_names(self.controller.ws, dataset, items)
            exp = (health or {}).get("experiment")
            report = read_report(self.controller.ws, exp["name"]) if exp else None
        except BaseException:
            self._polling = False
            raise
        self.app.call_from_thread(self._scraped, url, now, snap, health, rows, items, dataset, report)

    def _scraped(self, url: str, now: float, snap, health: dict | None, rows, items: list[int],
                 dataset: str | None, report: dict | None = None) -> None:
        # the next poll may start once what this one found is shown (cleared here, on the app's
        # thread: a poll asked for right after these numbers appear is never skipped)
        self._polling = False
        if url != self.url():
            return                       # another server by now
        if dataset:
            self.items, self._items_for = items, dataset
        self.health, self.report = health, report
        if snap is not None:
            had_prev = self.snapshot is not None
            self.snapshot = snap
            self.rows = rows or []
            if self._t0 is None:
                self._t0 = now
            if had_prev and self.rows:
                self.rps.append((now - self._t0, float(self.rows[0][1])))
        self._check_newer()
        self._show()

    # ---- showing -------------------------------------------------------------------------------
    def _show(self) -> None:
        self._show_head()
        self._show_curl()
        self._show_stats()
        self.query_one("#serve-arms", ArmsPanel).show((self.health or {}).get("experiment") if self.url() else None,
                                                      self.report)

    def _show_head(self) -> None:
        self.query_one("#serve-head", Static).update(
            head_text(self.job, self.health, self.snapshot, getattr(self.app, "show_timings", True)))

    def _show_curl(self) -> None:
        w = self.query_one("#serve-curl", Static)
        url = self.url()
        if url is None:
            w.update("")
            return
        names = names_line(self.items, getattr(self, "item_names", {}))
        w.update(Text.assemble(("try it (ctrl+y copies):\n", "dim"),
                               (curl_line(url, self.items, self.api_key(), self._ab()), "cyan"),
                               (f"\n  ({names})" if names else "", "dim")))

    def _ab(self) -> bool:
        """An A/B server: its requests need a session_id."""
        return bool((self.health or {}).get("experiment"))

    def _show_stats(self) -> None:
        table = self.query_one("#serve-stats", DataTable)
        rows = self.rows if self.url() else []
        if [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)] != rows:
            table.clear()
            for r in rows:
                table.add_row(*r, key=r[0])
        chart = self.query_one("#serve-chart", Chart)
        xs = [x for x, _ in self.rps]
        ys = [y for _, y in self.rps]
        chart.update_data(ChartData(title=f"{MAIN_ENDPOINT} requests/s", xlabel="seconds",
                                    series=[Series("req/s", xs, ys)] if self.url() else [],
                                    empty_text="requests per second of /recommend, every second"))

    def served_run(self) -> str | None:
        job = self.job
        if job is None or not job.running:
            return None
        run = (self.health or {}).get("run_id") or (job.serving or {}).get("run_id")
        return run or None

    def _check_newer(self) -> None:
        """Say once per run when a better finished run of the served model and dataset exists."""
        better = self.query_one("#serve-better", Static)
        newer = self.controller.newer_run(self.served_run())
        better.set_class(newer is not None, "-visible")
        if newer is None:
            better.update("")
            return
        better.update(Text(f"a better run finished: {newer.run_id} (ctrl+r reloads the server with it)",
                           style="bold yellow"))
        if newer.run_id not in self._told_newer:
            self._told_newer.add(newer.run_id)
            self.load_targets()
            self.notify(f"a better run finished: {newer.run_id}. Reload the server with it? (ctrl+r on F8)",
                        title="serve", timeout=10)

    # ---- start / stop / reload -------------------------------------------------------------------
    def form_request(self) -> ServeRequest:
        target = self.query_one("#s-target", Select).value
        if not isinstance(target, str) or not target:
            raise FormError("nothing to serve: train a model (F4) or build a dataset for the baselines (F2)")
        host = self.query_one("#s-host", Input).value.strip()
        if not host or any(c.isspace() for c in host):
            raise FormError(f"host: expected an address such as 127.0.0.1 or 0.0.0.0, got {host!r}")
        port_text = self.query_one("#s-port", Input).value.strip()
        try:
            port = int(port_text)
            if not 1 <= port <= 65535:
                raise ValueError
        except ValueError:
            raise FormError(f"port: expected a whole number from 1 to 65535, got {port_text!r}") from None
        runtime = str(self.query_one("#s-runtime", Select).value)
        search = str(self.query_one("#s-search", Select).value)
        workers_text = self.query_one("#s-workers", Input).value.strip()
        try:
            workers = int(workers_text)
            if not 1 <= workers <= MAX_WORKERS:
                raise ValueError
        except ValueError:
            raise FormError(f"workers: expected a whole number from 1 to {MAX_WORKERS}, got {workers_text!r}") from None
        key = self.query_one("#s-key", Input).value
        # the server's own rules, said before it starts
        if not is_loopback(host) and not key:
            raise FormError(f"host: {host} is reachable from other machines; type an API key "
                            f"(at least {MIN_KEY_CHARS} characters) or use 127.0.0.1")
        if key:
            try:
                check_key("API key", key)
            except InputError as e:
                raise FormError(str(e)) from None
        arm_b = self.query_one("#s-arm-b", Select).value
        arms = (f"A={target}", f"B={arm_b}") if isinstance(arm_b, str) and arm_b else ()
        if arms and workers > 1:
            raise FormError("workers: an A/B server runs in one process (its experiment's logs and phases); use 1")
        return ServeRequest(target, host, port, runtime, key or None, search=search, workers=workers, arms=arms)

    def action_start(self) -> None:
        running = self.controller.serve_job()
        if running is not None:
            self.error(f"{running.title} is running: stop it first (ctrl+t)")
            return
        try:
            req = self.form_request()
        except FormError as e:
            self.error(str(e))
            return
        job = self.controller.start_serving(req)
        if job is not None:
            self.job_id = job.id
            self._reset_live()
            self._show()

    def action_stop(self) -> None:
        job = self.job
        if job is None or not (job.active or job.status == JobStatus.DETACHED):
            self.error("no server of this app is running")
            return
        self.notify(self.controller.cancel(job), timeout=5)
        self._show()

    def action_reload(self) -> None:
        url = self.url()
        if url is None:
            self.error("no server is answering: start one first (ctrl+s)")
            return
        from tui.dialogs.serve import ReloadScreen
        served = self.served_run()
        runs = [(label, t) for label, t in self.targets if not Target.parse(t).is_baseline and t != served]
        newer = self.controller.newer_run(served)
        if newer is not None and newer.run_id not in [t for _, t in runs]:      # the list is older than it
            runs.insert(0, (f"{newer.model} on {newer.dataset}: {newer.run_id}", newer.run_id))
        key = self.admin_key()

        def done(choice: tuple[str, str | None] | None) -> None:
            if choice is not None:
                self._post_reload(url, choice[1], key)
        self.app.push_screen(ReloadScreen(served, runs, newer.run_id if newer else None), done)

    @work(thread=True, group="serve-reload", exit_on_error=False)
    def _post_reload(self, url: str, target: str | None, key: str | None) -> None:
        from engine.serve.scrape import request_reload
        ok, msg = request_reload(url, target, key)
        what = target or "the same run"
        if ok:
            self.app.call_from_thread(self.notify, f"reloading {what}: {msg}", title="serve", timeout=5)
        else:
            self.app.call_from_thread(self.error, f"reload {what} refused: {msg}")

    def action_copy_curl(self) -> None:
        url = self.url()
        if url is None:
            self.error("no server is answering: start one first (ctrl+s)")
            return
        self.app.copy_to_clipboard(copy_line(curl_line(url, self.items, self.api_key(), self._ab()), self.api_key()))
        self.notify("curl line copied", timeout=3)

    @on(Button.Pressed, "#serve-start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#serve-stop")
    def _stop_pressed(self) -> None:
        self.action_stop()

    @on(Button.Pressed, "#serve-reload")
    def _reload_pressed(self) -> None:
        self.action_reload()
