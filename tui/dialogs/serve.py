"""The Serve screen's dialog: reload the server with a newer, better run."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, OptionList, Static
from textual.widgets.option_list import Option

from tui.dialogs.base import Dialog


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
