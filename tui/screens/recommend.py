"""Recommend: type a session as item ids (or pick popular items) and see the top-10 next items of a
trained run or a baseline, updated as you type; a second model side by side. Business rules
(`-ID cat:ID boost:ID+1.5 available`, engine.inference.rules) apply to both; with item metadata
the items have names and categories, and the highlighted row's details pane says what the item is
and why it was recommended (engine.inference.explain)."""

from __future__ import annotations

import time
from typing import Any, Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Input, OptionList, Select, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from engine.core.errors import InputError
from engine.core.schema import RunStatus
from engine.core.target import Target
from engine.core.threads import set_compute_threads
from engine.data.items import parse_item_ids
from engine.models.registry import BASELINES
from tui.messages import DatasetsChanged, RunsChanged
from tui.screens.base import BaseScreen

K = 10
POPULAR_N = 300
SIDES = ("a", "b")


def source_key(kind: str, name: str, dataset: str | None = None) -> str:
    """The picker's key of a source: 'run:<id>', or a baseline as the engine spells its target
    ('baseline:<name>@<dataset>'; a run's bare id could look like anything, hence its prefix)."""
    return f"run:{name}" if kind == "run" else str(Target.of_baseline(name, dataset or ""))


def parse_source_key(key: str) -> tuple[str, str, str | None]:
    if key.startswith("run:"):
        return "run", key[4:], None
    try:
        t = Target.parse(key)
    except InputError:
        t = None
    if t is None or not t.is_baseline:
        raise ValueError(f"not a recommender source: {key!r}")
    return "baseline", t.baseline, t.dataset


def parse_ids(text: str) -> tuple[list[int], str | None]:
    """Item ids typed as 'a, b c' -> ([ids], None), or ([], message) for the first bad token."""
    try:
        return parse_item_ids(text), None
    except InputError as e:
        return [], str(e)


def list_sources(controller) -> list[tuple[str, str]]:
    """(label, key) of everything that can recommend: runs with a checkpoint (newest first), then
    the baselines on each built dataset."""
    from engine.data.report import dataset_report
    out = []
    for r in sorted(controller.list_runs(), key=lambda r: r.created, reverse=True):
        if r.status not in (RunStatus.FAILED, RunStatus.UNREADABLE) and controller.can_recommend(r.run_id):
            out.append((f"{r.model} on {r.dataset}: {r.run_id}", source_key("run", r.run_id)))
    ws = controller.ws
    for name in ws.dataset_names():
        if dataset_report(ws, name).built:
            for b in BASELINES:
                out.append((f"baseline {b} on {name}", source_key("baseline", b, name)))
    return out


def load_recommender(ws, key: str):
    from engine.inference.recommend import Recommender
    _one_torch_thread()
    kind, name, dataset = parse_source_key(key)
    if kind == "run":
        return Recommender.load(ws.run(name), device="cpu")
    return Recommender.for_baseline(ws, dataset, name, device="cpu")


def _one_torch_thread() -> None:
    """Scoring one typed session is a few small matrix products: one thread answers in a few ms,
    while torch's default thread pool can take 50x longer on a machine busy with training (the app
    process uses torch only for these lookups; training runs in child processes)."""
    set_compute_threads(1)


def details_text(r: Any, row: int) -> Text:
    """The details pane of row `row` of recommendation `r`: the item, its name, category path, price
    and availability, then its evidence in one line (engine.inference.explain.explanation_text)."""
    if r is None or not 0 <= row < len(r.items):
        return Text("")
    from engine.inference.explain import explanation_text
    d = (r.info or [{}] * len(r.items))[row]
    t = Text(f"{row + 1}. item {r.items[row]}", style="bold")
    if d.get("name"):
        t.append(f"  {d['name']}")
    if d.get("path"):
        t.append("  " + " > ".join(d["path"]), style="cyan")
    if d.get("price") is not None:
        t.append(f"  price {d['price']:g}")
    if d.get("available") is not None:
        t.append("  in stock" if d["available"] else "  out of stock", style="green" if d["available"] else "red")
    why = explanation_text((r.explanations or [None] * len(r.items))[row], n=3)
    if why:
        t.append("\nwhy: ", style="bold")
        t.append(why)
    return t


def fmt_score(v: float) -> str:
    """At most 6 characters: 0.9637, 12.35, 1234, 12.3k, 1.2e+09."""
    if v != v:
        return "-"
    a = abs(v)
    if a >= 1e6:
        return f"{v:.1e}".replace("e+0", "e")
    if a >= 10_000:
        return f"{v / 1000:.1f}k"
    if a >= 1000:
        return f"{v:.0f}"
    return f"{v:.4g}" if a >= 1 else f"{v:.4f}" if a >= 1e-4 else f"{v:.0e}" if v else "0"


class RecommendScreen(BaseScreen):
    MODE = "recommend"
    TITLE_TEXT = "Recommend"
    BINDINGS = [
        Binding("ctrl+l", "clear", "Clear", tooltip="empty the item ids"),
        Binding("ctrl+e", "focus_ids", "Ids", tooltip="type item ids"),
        Binding("ctrl+f", "focus_search", "Search", tooltip="filter the popular items"),
        Binding("ctrl+b", "focus_b", "Compare", show=False, tooltip="pick a second model (B)"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[tuple[str, str]] = []
        self.ids: list[int] = []
        self.rules: Any = None               # engine.inference.rules.Rules, None: none
        self.pending: dict[str, str | None] = {"a": None, "b": None}
        self.results: dict[str, Any] = {"a": None, "b": None}
        self.popular: list[tuple[int, int]] = []
        self._popular_for: str | None = None
        self._typed_at: float | None = None
        self.last_latency: float | None = None

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="rec-sources"):
            yield Static("A", classes="src-label")
            yield Select([], id="src-a", compact=True, prompt="(choose a run or baseline)")
            yield Static("B", classes="src-label")
            yield Select([], id="src-b", compact=True, prompt="(none: compare with a second model)")
        with Horizontal(id="ids-row"):
            yield Static("ids", classes="src-label")
            yield Input(id="ids", compact=True, placeholder="item ids, oldest first, e.g. 12 345 678 (or pick below)")
        with Horizontal(id="rules-row"):
            yield Static("rules", classes="src-label")
            yield Input(id="rules", compact=True, placeholder="-ID excludes, cat:ID only, boost:ID+1.5, available")
        yield Static("", id="rec-status")
        with Horizontal(id="rec-main"):
            with Vertical(id="pop-box"):
                yield Input(id="pop-filter", compact=True, placeholder="search popular")
                yield OptionList(id="pop-list")
            for side in SIDES:
                with Vertical(id=f"rec-{side}-box", classes="rec-box"):
                    yield Static("", id=f"rec-{side}-title", classes="rec-title")
                    yield DataTable(id=f"rec-{side}", cursor_type="row", cell_padding=0)
        yield Static("", id="rec-why")

    def on_mount(self) -> None:
        for side in SIDES:
            t = self.query_one(f"#rec-{side}", DataTable)
            # fixed widths: the columns do not jump while the session is typed
            for label, key, width in (("#", "rank", 3), ("item", "item", 8), ("score", "score", 7),
                                      ("pop", "pop", 7), ("in", "in", 3), ("name", "name", 16)):
                t.add_column(label, key=key, width=width)
        self.load_sources()
        self._show_titles()
        self.query_one("#ids", Input).focus()

    def on_screen_resume(self) -> None:
        self.load_sources()

    def on_runs_changed(self, _: RunsChanged) -> None:
        self.load_sources()

    def on_datasets_changed(self, _: DatasetsChanged) -> None:
        self.load_sources()

    # ---- sources -------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="rec-sources", exit_on_error=False)
    def load_sources(self) -> None:
        try:
            src = list_sources(self.controller)
        except Exception as e:
            self.app.call_from_thread(self.error, f"could not list runs and datasets: {e}")
            return
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._set_sources, src)

    def _set_sources(self, sources: list[tuple[str, str]]) -> None:
        keys = [k for _, k in sources]
        pref = self.controller.take_preferred_source()
        if sources != self.sources:
            self.sources = sources
            for side in SIDES:
                sel = self.query_one(f"#src-{side}", Select)
                cur = sel.value
                with self.prevent(Select.Changed):
                    sel.set_options(sources)
                    if isinstance(cur, str) and cur in keys:
                        sel.value = cur
        a = self.query_one("#src-a", Select)
        if pref in keys and a.value != pref:
            a.value = pref            # fires Changed -> loads it
        elif a.value is Select.NULL and sources:
            a.value = self.controller.default_source(keys)
        elif isinstance(a.value, str) and self.results["a"] is None and not self.pending["a"]:
            self._source_changed("a")
        self._show_titles()
        if not sources:
            self._status(Text("Nothing can recommend yet: build a dataset (F2) for the baselines, or train a "
                              "model (F4).", style="yellow"))

    @on(Select.Changed, "#src-a")
    def _a_changed(self) -> None:
        self._source_changed("a")

    @on(Select.Changed, "#src-b")
    def _b_changed(self) -> None:
        self._source_changed("b")

    def _key(self, side: str) -> str | None:
        v = self.query_one(f"#src-{side}", Select).value
        return v if isinstance(v, str) else None

    def _source_changed(self, side: str) -> None:
        key = self._key(side)
        self.results[side] = None
        self._fill(side)
        if key is None:
            self._show_titles()
            return
        if self.controller.recommender(key) is not None:
            self.pending[side] = None
            self._after_load(side, key)
            return
        self.pending[side] = key
        self._show_titles()
        self.load_worker(side, key)

    @work(thread=True, exclusive=False, group="rec-load", exit_on_error=False)
    def load_worker(self, side: str, key: str) -> None:
        t0 = time.perf_counter()
        try:
            rec = load_recommender(self.controller.ws, key)
            err = None
        except Exception as e:       # InputError and anything else: a message, not a traceback
            rec, err = None, f"{type(e).__name__}: {e}" if type(e).__name__ != "InputError" else str(e)
        self.app.call_from_thread(self._loaded, side, key, rec, err, time.perf_counter() - t0)

    def _loaded(self, side: str, key: str, rec: Any, err: str | None, seconds: float) -> None:
        if rec is not None:
            self.controller.keep_recommender(key, rec)
        if self.pending.get(side) == key:
            self.pending[side] = None
        if self._key(side) != key:
            return
        if err:
            self.error(f"could not load {key}: {err}")
            self._status(Text(f"{key}: {err}", style="red"))
            self._show_titles()
            return
        self._after_load(side, key)

    def _after_load(self, side: str, key: str) -> None:
        self._show_titles()
        if side == "a" and self._popular_for != key:
            rec = self.controller.recommender(key)
            try:
                self.popular = rec.popular(POPULAR_N)
            except Exception:
                self.popular = []
            self._popular_for = key
            self._fill_popular()
        self.lookup(side)

    def _show_titles(self) -> None:
        for side in SIDES:
            key = self._key(side)
            title = self.query_one(f"#rec-{side}-title", Static)
            if key is None:
                title.update(Text("B: pick a second model to compare" if side == "b" else "A: pick a source",
                                  style="dim"))
            elif self.pending.get(side) == key:
                title.update(Text(f"{side.upper()}: loading {self._label(key)} ...", style="cyan"))
            else:
                r = self.results.get(side)
                t = Text(f"{side.upper()}: {self._label(key)}", style="bold", no_wrap=True, overflow="ellipsis")
                if r is not None and getattr(self.app, "show_timings", True):
                    t.append(f"  {r.seconds * 1000:.1f} ms", style="dim")
                title.update(t)

    def _label(self, key: str) -> str:
        kind, name, ds = parse_source_key(key)
        return f"{name} @ {ds}" if kind == "baseline" else name

    # ---- popular items -------------------------------------------------------------------------
    def _fill_popular(self) -> None:
        q = self.query_one("#pop-filter", Input).value.strip()
        ol = self.query_one("#pop-list", OptionList)
        ol.clear_options()
        names = self._names([i for i, _ in self.popular])
        items = [(i, c) for i, c in self.popular if q in str(i) or q.lower() in names.get(i, "").lower()] \
            if q else self.popular
        ol.add_options([Option(f"{i} {names[i]} ({c})" if names.get(i) else f"{i} ({c})", id=str(i))
                        for i, c in items[:POPULAR_N]])

    def _names(self, ids: list[int]) -> dict[int, str]:
        """Item names from source A's metadata (empty without it)."""
        key = self._key("a")
        rec = self.controller.recommender(key) if key else None
        info = rec.describe(ids) if rec is not None and hasattr(rec, "describe") else None
        return {i: d.get("name") or "" for i, d in zip(ids, info)} if info else {}

    @on(Input.Changed, "#pop-filter")
    def _filter(self) -> None:
        self._fill_popular()

    @on(Input.Submitted, "#pop-filter")
    def _filter_submit(self) -> None:
        ol = self.query_one("#pop-list", OptionList)
        if ol.option_count:
            ol.highlighted = 0
            ol.focus()

    @on(OptionList.OptionSelected, "#pop-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self._add_item(event.option.id)

    def _add_item(self, item: str | None) -> None:
        if not item:
            return
        ids = self.query_one("#ids", Input)
        ids.value = (ids.value.rstrip() + " " + item).strip()

    def action_add_popular(self) -> None:
        ol = self.query_one("#pop-list", OptionList)
        if ol.highlighted is not None:
            self._add_item(ol.get_option_at_index(ol.highlighted).id)

    # ---- the session ---------------------------------------------------------------------------
    @on(Input.Changed, "#ids")
    def _ids_changed(self, event: Input.Changed) -> None:
        ids, err = parse_ids(event.value)
        if err:
            self._status(Text(err, style="red"))
            return
        self.ids = ids
        self._status(Text(""))
        self._typed_at = time.perf_counter()
        self.lookup()

    @on(Input.Changed, "#rules")
    def _rules_changed(self, event: Input.Changed) -> None:
        from engine.inference.rules import Rules
        try:
            rules = Rules.parse(event.value)
        except InputError as e:
            self._status(Text(str(e), style="red"))
            return
        self.rules = None if rules.empty else rules
        self._status(Text(""))
        self.lookup()

    def lookup(self, side: str | None = None) -> None:
        """Score the typed session with every loaded source (A and B) in one thread worker."""
        keys = {s: k for s in SIDES if (k := self._key(s)) is not None and self.controller.recommender(k) is not None}
        if keys:
            self.lookup_worker(keys, list(self.ids), self.rules)

    @work(thread=True, exclusive=True, group="rec-lookup", exit_on_error=False)
    def lookup_worker(self, keys: dict[str, str], ids: list[int], rules: Any = None) -> None:
        # exclusive: a new key press supersedes the lookup of the previous one
        out = {}
        for side, key in keys.items():
            if get_current_worker().is_cancelled:
                return
            rec = self.controller.recommender(key)
            if rec is None:
                continue
            try:
                out[side] = (key, rec.recommend(ids, K, rules=rules, explain=True), None)
            except Exception as e:
                out[side] = (key, None, str(e))
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_results, ids, out)

    def _show_results(self, ids: list[int], out: dict) -> None:
        if ids != self.ids:
            return
        if self._typed_at is not None:
            self.last_latency = time.perf_counter() - self._typed_at     # key -> table, in the app
            self._typed_at = None
        msgs = []
        for side, (key, r, err) in out.items():
            if key != self._key(side):
                continue
            if err:
                msgs.append(Text(f"{side.upper()}: {err}", style="red"))
                continue
            self.results[side] = r
            self._fill(side)
        r = self.results.get("a") or self.results.get("b")
        if r is not None:
            t = Text()
            if not ids:
                t.append("empty session: the most popular items. Type item ids above.", style="dim")
            else:
                t.append(f"{len(r.known)} known id(s)", style="green" if r.known else "yellow")
                if r.unknown:
                    t.append("  unknown (ignored): ", style="yellow")
                    t.append(" ".join(map(str, r.unknown[:12])) + (" ..." if len(r.unknown) > 12 else ""),
                             style="yellow")
                if r.fallback:
                    t.append("  no known item: popularity fallback", style="yellow")
            for m in msgs:
                t.append("  ")
                t.append_text(m)
            self._status(t)
        elif msgs:
            self._status(msgs[0])
        self._show_titles()

    def _fill(self, side: str) -> None:
        t = self.query_one(f"#rec-{side}", DataTable)
        t.clear()
        r = self.results.get(side)
        if r is None:
            return
        info = r.info or [{} for _ in r.items]
        for i, (item, score, pop, ins) in enumerate(zip(r.items, r.scores, r.popularity, r.in_session)):
            t.add_row(str(i + 1), str(item), fmt_score(score), f"{pop:,}" if pop < 100_000 else f"{pop // 1000}k",
                      Text("yes", style="cyan") if ins else "", info[i].get("name") or "", key=str(i))
        if side == "a":
            self._show_why("a", t.cursor_row)

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        side = (event.data_table.id or "").removeprefix("rec-")
        if side in SIDES:
            self._show_why(side, event.cursor_row)

    def _show_why(self, side: str, row: int) -> None:
        """The details pane: what the highlighted item is and why it was recommended."""
        self.query_one("#rec-why", Static).update(details_text(self.results.get(side), row))

    def _status(self, text: Text) -> None:
        self.query_one("#rec-status", Static).update(text)

    # ---- keys ----------------------------------------------------------------------------------
    def action_clear(self) -> None:
        self.query_one("#ids", Input).value = ""
        self.query_one("#ids", Input).focus()

    def action_focus_ids(self) -> None:
        self.query_one("#ids", Input).focus()

    def action_focus_search(self) -> None:
        self.query_one("#pop-filter", Input).focus()

    def action_focus_b(self) -> None:
        self.query_one("#src-b", Select).focus()
