"""The Datasets screen's dialogs: generate the demo, import a log, rebuild from a stage. Inputs are
checked here, so a bad path or name is a message in the dialog, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static

from engine.core.errors import InputError
from engine.core.schema import DataFormat, values
from engine.core.workspace import demo_dataset_name
from engine.data.demo import DEMO_SIZES as GENERATOR_SIZES
from engine.data.format_specs import source_is_folder, srgnn_files
from tui.dialogs.base import Dialog

FORMATS = values(DataFormat)
SIZE_NOTES = {"tiny": "~430 sessions, seconds", "small": "~22K sessions, the default",
              "full": "RetailRocket scale, minutes",
              "wide": "full with ~240K items in training, minutes", "xl": "YooChoose-full shape, ~30M events"}
DEMO_SIZES = tuple((f"{n}: {SIZE_NOTES[n]}" if n in SIZE_NOTES else n, n) for n in GENERATOR_SIZES)


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
        default = demo_dataset_name(size)
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
