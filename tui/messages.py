"""What the controller tells the screens (Textual messages, posted to every listening screen)."""

from __future__ import annotations

from textual.message import Message


class ControllerMessage(Message, bubble=False):
    """Something the controller tells every listening screen. Never bubbles: each listener gets
    its own copy, so a screen's copy must not reach the App (which listens for itself)."""

    def __init_subclass__(cls, **kwargs) -> None:
        kwargs["bubble"] = False            # Textual's default would make every subclass bubble
        super().__init_subclass__(**kwargs)


class JobsChanged(ControllerMessage):
    """A job started, moved or ended."""


class DatasetsChanged(ControllerMessage):
    """A dataset was created, built, rebuilt or deleted."""


class RunsChanged(ControllerMessage):
    """A run started or ended (the runs list changed)."""


class RunUpdated(ControllerMessage):
    """New events of one run (its state's `version` moved)."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id


class StudiesChanged(ControllerMessage):
    """A tuning job started or ended (the studies and their trials changed)."""


class DeviceReady(ControllerMessage):
    """Device detection finished (`controller.device`)."""


class GuideChanged(ControllerMessage):
    """The first-run guide line changed."""


class Notice(ControllerMessage):
    """A notification for the user (the app shows it)."""

    def __init__(self, text: str, severity: str = "information", title: str = "", timeout: float = 5) -> None:
        super().__init__()
        self.text, self.severity, self.title, self.timeout = text, severity, title, timeout


class GoTo(ControllerMessage):
    """Switch to a screen and, optionally, run one of its actions (the app does it)."""

    def __init__(self, mode: str, action: str | None = None) -> None:
        super().__init__()
        self.mode, self.action = mode, action
