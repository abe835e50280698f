"""The Runs and Train screens' dialogs: a run's details (config, metrics, events), open a run."""

from __future__ import annotations

import json

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, OptionList, Static
from textual.widgets.option_list import Option

from engine.core.workspace import RunDir
from tui.dialogs.base import Dialog


class RunDetailsScreen(Dialog):
    """A run's config and the end of its events file (read-only)."""

    DEFAULT_CSS = """
    RunDetailsScreen > Vertical { width: 110; height: 90%; }
    RunDetailsScreen VerticalScroll { height: 1fr; }
    """
    BINDINGS = [Binding("escape", "cancel", "Close")]

    def __init__(self, run: RunDir) -> None:
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"run {self.run.run_id}  (escape closes)", classes="title")
            with VerticalScroll(id="details-scroll"):
                yield Static(self._text(), id="details")

    def on_mount(self) -> None:
        self.query_one("#details-scroll").focus()

    def _text(self) -> Text:
        from engine.runs.events import EventTail, RunFailed, Step
        t = Text()
        name = self.run.config.name
        try:
            cfg = json.loads(self.run.config.read_bytes().decode("utf-8"))
            t.append(f"{name}\n", style="bold")
            t.append(json.dumps(cfg.get("train", cfg), indent=1) + "\n")
            if cfg.get("dataset"):
                t.append(f"dataset: {json.dumps(cfg['dataset'])}\n")
        except (OSError, ValueError, AttributeError) as e:
            t.append(f"{name}: {e}\n", style="red")
        tail = EventTail(self.run.events)
        events = tail.read_all()
        t.append(f"\n{self.run.events.name} ({len(events)} events; step events summarised"
                 + (f"; {tail.skipped} unreadable lines skipped" if tail.skipped else "") + ")\n", style="bold")
        steps = [e for e in events if isinstance(e, Step)]
        for e in events:
            if isinstance(e, Step):
                continue
            ev = {k: v for k, v in e.to_dict().items() if k not in ("config", "traceback", "time", "run_id", "type")}
            for key in ("val", "test"):
                if isinstance(ev.get(key), dict):
                    ev[key] = _metrics_only(ev[key])
            t.append(f"{e.TYPE}: ", style="bold cyan")
            t.append(json.dumps(ev, default=str)[:600] + "\n")
        if steps:
            t.append(f"{len(steps)} step events, last: {json.dumps(steps[-1].to_dict())[:300]}\n", style="dim")
        tb = next((e.traceback for e in events if isinstance(e, RunFailed) and e.traceback), None)
        if tb:
            t.append("\ntraceback\n", style="bold red")
            t.append(tb)
        return t


def _metrics_only(d: dict) -> dict:
    if "metrics" in d:
        return {"protocol": d.get("protocol"), "metrics": d["metrics"], "n": d.get("n")}
    return {k: _metrics_only(v) if isinstance(v, dict) else v for k, v in d.items()}


class OpenRunScreen(Dialog):
    """Pick a run to show on the Train screen (running ones first)."""

    DEFAULT_CSS = """
    OpenRunScreen OptionList { height: auto; max-height: 16; }
    """

    def __init__(self, runs: list[tuple[str, str]]) -> None:
        super().__init__()
        self.runs = runs          # (status, run id), in the order to list them

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Re-open a run (its charts come from its events file; a running one is followed)",
                         classes="title")
            if self.runs:
                yield OptionList(*[Option(f"{status:<13} {rid}", id=rid) for status, rid in self.runs], id="runs")
            else:
                yield Static("no runs yet: start one with ctrl+s on the Train screen")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        if self.runs:
            self.query_one("#runs", OptionList).focus()

    @on(OptionList.OptionSelected)
    def selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    @on(Button.Pressed, "#cancel")
    def cancel_pressed(self) -> None:
        self.dismiss(None)
