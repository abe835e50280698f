"""Dialogs: confirmations, the demo and import forms, rebuild, quit, run details, open a run.

Each returns its answer with `dismiss(value)` (None = cancelled, also with escape). Inputs are
checked here, so a bad path or name is a message in the dialog, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from engine.core.errors import InputError
from engine.core.schema import DataFormat, values
from engine.core.workspace import RunDir
from engine.data.demo import DEMO_SIZES as GENERATOR_SIZES
from engine.data.format_specs import source_is_folder, srgnn_files

FORMATS = values(DataFormat)
SIZE_NOTES = {"tiny": "~430 sessions, seconds", "small": "~22K sessions, the default",
              "full": "RetailRocket scale, minutes",
              "wide": "full with ~240K items in training, minutes", "xl": "YooChoose-full shape, ~30M events"}
DEMO_SIZES = tuple((f"{n}: {SIZE_NOTES[n]}" if n in SIZE_NOTES else n, n) for n in GENERATOR_SIZES)


class Dialog(ModalScreen):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    Dialog { align: center middle; }
    Dialog > Vertical { width: 72; max-width: 95%; height: auto; max-height: 95%;
                        border: round $accent; background: $surface; padding: 0 1; }
    Dialog .title { text-style: bold; margin-bottom: 1; }
    Dialog .error { color: $error; height: auto; }
    Dialog .buttons { height: auto; margin-top: 1; align-horizontal: right; }
    Dialog .buttons Button { margin-left: 1; }
    Dialog Label { margin-top: 1; }
    Dialog Input { background: $boost; }
    """

    def action_cancel(self) -> None:
        self.dismiss(None)

    def set_error(self, msg: str) -> None:
        self.query_one("#error", Static).update(msg)


class ConfirmScreen(Dialog):
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+y", "yes", "Yes")]

    def __init__(self, message: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.message, self.yes_label, self.no_label = message, yes, no

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.message, classes="title")
            with Horizontal(classes="buttons"):
                yield Button(self.no_label, id="no", compact=True)
                yield Button(self.yes_label, id="yes", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class DemoScreen(Dialog):
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "submit", "Generate")]

    def __init__(self, existing: list[str]) -> None:
        super().__init__()
        self.existing = existing

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Generate a demo dataset (RetailRocket format, with a planted structure and its "
                         "oracle) and build it", classes="title")
            yield Label("Size")
            yield Select(DEMO_SIZES, value="small", allow_blank=False, id="size", compact=True)
            yield Label("Name (empty: demo for small, demo-<size> otherwise)")
            yield Input(id="name", compact=True, placeholder="demo")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Generate (ctrl+s)", id="ok", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#size", Select).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def action_submit(self) -> None:
        from engine.core.workspace import NAME_RE
        size = self.query_one("#size", Select).value
        name = self.query_one("#name", Input).value.strip()
        if name and not NAME_RE.match(name):
            self.set_error(f"name {name!r}: use letters, digits, '_', '-', '.' (starting with a letter or digit)")
            return
        default = "demo" if size == "small" else f"demo-{size}"
        self.dismiss({"size": size, "name": name or None, "dataset": name or default})

    @on(Button.Pressed, "#cancel")
    def cancel_pressed(self) -> None:
        self.dismiss(None)


def check_import(path: str, fmt: Any, name: str, test: str, existing: list[str]) -> tuple[dict | None, str]:
    """Validate the import form: (values, "") or (None, message)."""
    from engine.core.workspace import NAME_RE
    if not path.strip():
        return None, "path: type the path of the raw log file (csv, csv.gz or dat)"
    p = Path(path.strip()).expanduser()
    if not p.exists():
        return None, f"path: {p} does not exist"
    if fmt not in FORMATS:
        return None, f"format: choose one of {', '.join(FORMATS)}"
    if source_is_folder(fmt):   # srgnn: a folder with its own test file
        try:
            srgnn_files(p)
        except InputError as e:
            return None, f"path: {e}"
        if test.strip():
            return None, f"test file: format {fmt} takes none (its folder holds test.txt); clear it"
    elif not p.is_file():
        return None, f"path: {p} is not a file" + (" (only format srgnn takes a folder)" if p.is_dir() else "")
    name = name.strip()
    if not name:
        return None, "name: give the dataset a name"
    if not NAME_RE.match(name):
        return None, f"name {name!r}: use letters, digits, '_', '-', '.' (starting with a letter or digit)"
    if name in existing:
        return None, f"name: dataset {name!r} already exists (delete it first, or choose another name)"
    t = None
    if test.strip():
        t = Path(test.strip()).expanduser()
        if not t.is_file():
            return None, f"test file: {t} does not exist or is not a file"
    return {"path": str(p.resolve()), "format": fmt, "name": name,
            "test": str(t.resolve()) if t else None}, ""


class ImportScreen(Dialog):
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "submit", "Import")]

    def __init__(self, existing: list[str]) -> None:
        super().__init__()
        self.existing = existing

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Import a raw click log and build it", classes="title")
            yield Label("Path of the log file")
            yield Input(id="path", compact=True, placeholder="~/data/events.csv")
            yield Label("Format")
            yield Select([(f, f) for f in FORMATS], value="retailrocket", allow_blank=False, id="format",
                         compact=True)
            yield Label("Dataset name")
            yield Input(id="name", compact=True, placeholder="retailrocket")
            yield Label("Test file (optional: a published test period)")
            yield Input(id="test", compact=True, placeholder="(none)")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Import (ctrl+s)", id="ok", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def action_submit(self) -> None:
        vals, err = check_import(self.query_one("#path", Input).value, self.query_one("#format", Select).value,
                                 self.query_one("#name", Input).value, self.query_one("#test", Input).value,
                                 self.existing)
        if vals is None:
            self.set_error(err)
            return
        self.dismiss(vals)

    @on(Button.Pressed, "#cancel")
    def cancel_pressed(self) -> None:
        self.dismiss(None)


class RebuildScreen(Dialog):
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "submit", "Rebuild")]

    def __init__(self, dataset: str, stages: list[str]) -> None:
        super().__init__()
        self.dataset, self.stages = dataset, stages

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Rebuild dataset {self.dataset}: rerun a stage and everything that depends on it",
                         classes="title")
            yield Select([("all stages", "__all__")] + [(s, s) for s in self.stages], value="__all__",
                         allow_blank=False, id="stage", compact=True)
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Rebuild (ctrl+s)", id="ok", variant="warning", compact=True)

    def on_mount(self) -> None:
        self.query_one("#stage", Select).focus()

    @on(Button.Pressed, "#ok")
    def action_submit(self) -> None:
        v = self.query_one("#stage", Select).value
        self.dismiss(True if v == "__all__" else v)

    @on(Button.Pressed, "#cancel")
    def cancel_pressed(self) -> None:
        self.dismiss(None)


class QuitScreen(Dialog):
    """Quit while jobs run: stop them, leave them running (detached), or stay."""

    BINDINGS = [Binding("escape", "cancel", "Stay"), Binding("ctrl+t", "choose('stop')", "Stop and quit"),
                Binding("ctrl+d", "choose('detach')", "Leave running")]

    def __init__(self, running: list) -> None:
        super().__init__()
        self.running = running

    def compose(self) -> ComposeResult:
        names = "\n".join(f"  - {j.title}" for j in self.running[:6])
        more = f"\n  ... and {len(self.running) - 6} more" if len(self.running) > 6 else ""
        with Vertical():
            yield Static(f"{len(self.running)} job(s) still running:\n{names}{more}\n\n"
                         "Leave them running: they go on without the app (a training run keeps writing "
                         "its events file; re-open it later with F4 then ctrl+o).", classes="title")
            with Horizontal(classes="buttons"):
                yield Button("Stay", id="stay", compact=True)
                yield Button("Stop and quit (ctrl+t)", id="stop", variant="error", compact=True)
                yield Button("Leave running (ctrl+d)", id="detach", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#detach", Button).focus()

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "stay" else event.button.id)


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


class ReloadScreen(Dialog):
    """Pick the run a running server loads next (the newest finished run first); the first entry
    reloads the run it serves (re-read from disk). Returns ("", None) for that, (label, run id)
    otherwise, None when cancelled."""

    DEFAULT_CSS = """
    ReloadScreen OptionList { height: auto; max-height: 14; }
    """
    SAME = "\x00same"

    def __init__(self, serving: str | None, runs: list[tuple[str, str]], preferred: str | None = None) -> None:
        super().__init__()
        self.serving = serving
        self.runs = runs              # (label, run id), newest first
        self.preferred = preferred

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Reload the server (it serves {self.serving or 'an unknown run'}); it keeps answering "
                         "with the old model until the new one is loaded", classes="title")
            opts = [Option(f"the same run again ({self.serving or '?'})", id=self.SAME)]
            opts += [Option(label, id=rid) for label, rid in self.runs]
            yield OptionList(*opts, id="reload-runs")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        ol = self.query_one("#reload-runs", OptionList)
        ids = [rid for _, rid in self.runs]
        ol.highlighted = 1 + ids.index(self.preferred) if self.preferred in ids else (1 if ids else 0)
        ol.focus()

    @on(OptionList.OptionSelected)
    def selected(self, event: OptionList.OptionSelected) -> None:
        rid = event.option.id
        self.dismiss(("", None) if rid == self.SAME else (str(event.option.prompt), rid))

    @on(Button.Pressed, "#cancel")
    def cancel_pressed(self) -> None:
        self.dismiss(None)
