"""What every dialog shares (`Dialog`: escape cancels, `dismiss(value)` answers, None = cancelled)
and the app-wide ones: a yes/no confirmation and the question asked when quitting with jobs running."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


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
