"""`sessrec-tui`: the terminal app. Each screen is a window onto the workspace (datasets, jobs,
training, runs, recommendations, tuning, serving); the UI-free `Controller` owns jobs and runs, long
work runs in engine child processes.

    sessrec-tui [--workspace DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Callable

from textual import work
from textual.app import App
from textual.binding import Binding

from engine.core.workspace import Workspace
from tui.commands import SessrecCommands
from tui.controller import Controller
from tui.format import short_path
from tui.messages import GoTo, Notice

TICK_INTERVAL = 0.25        # how often the controller follows runs and publishes job changes


def load_device_info() -> dict:
    """What the engine sees (imports torch: the app calls it in a thread worker)."""
    from engine.core.device import device_info
    return device_info()


def _modes() -> dict[str, Callable]:
    from tui.screens.datasets import DatasetsScreen
    from tui.screens.help import HelpScreen
    from tui.screens.jobs import JobsScreen
    from tui.screens.recommend import RecommendScreen
    from tui.screens.runs import RunsScreen
    from tui.screens.serve import ServeScreen
    from tui.screens.train import TrainScreen
    from tui.screens.tune import TuneScreen
    return {"help": HelpScreen, "datasets": DatasetsScreen, "jobs": JobsScreen, "train": TrainScreen,
            "runs": RunsScreen, "recommend": RecommendScreen, "tune": TuneScreen,
            "serve": ServeScreen}


class SessrecApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "sessrec"
    MODES = _modes()
    DEFAULT_MODE = "datasets"
    COMMANDS = App.COMMANDS | {SessrecCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("f1", "show('help')", "Help", key_display="F1", id="screen.help",
                tooltip="keys, what each screen does, where files live"),
        Binding("f2", "show('datasets')", "Data", key_display="F2", id="screen.datasets",
                tooltip="datasets, their stages, stats and distributions"),
        Binding("f3", "show('jobs')", "Jobs", key_display="F3", id="screen.jobs",
                tooltip="running and recent jobs, progress and logs"),
        Binding("f4", "show('train')", "Train", key_display="F4", id="screen.train",
                tooltip="train a model, live charts"),
        Binding("f5", "show('runs')", "Runs", key_display="F5", id="screen.runs",
                tooltip="all runs, sortable; compare curves"),
        Binding("f6", "show('recommend')", "Rec", key_display="F6", id="screen.recommend",
                tooltip="top-10 next items for a typed session"),
        Binding("f7", "show('tune')", "Tune", key_display="F7", id="screen.tune",
                tooltip="hyperparameter studies: trials, best configuration, start one"),
        Binding("f8", "show('serve')", "Serve", key_display="F8", id="screen.serve",
                tooltip="serve a model over HTTP: address, curl line, live requests/s and latency"),
        Binding("question_mark", "show('help')", "Help", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True, id="quit",
                tooltip="asks first when jobs are running"),
    ]

    def __init__(self, workspace: str | os.PathLike | None = None, *, engine_cmd: list[str] | None = None,
                 device_loader: Callable[[], dict] | None = None, kill_after: float = 15.0,
                 kill_after_train: float = 120.0, load_history: bool = True, show_timings: bool = True) -> None:
        super().__init__()
        self.ws = Workspace.open(workspace)
        self.ws.root.mkdir(parents=True, exist_ok=True)
        self.controller = Controller(self.ws, engine_cmd=engine_cmd, spawn=self._spawn_job, kill_after=kill_after,
                                     kill_after_train=kill_after_train, load_history=load_history)
        self.device_loader = device_loader or load_device_info
        self.show_timings = show_timings                # off in screenshots: times vary
        self._quitting = False

    # ---- start up ------------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.sub_title = short_path(self.ws.root)
        self.controller.listen(self)
        self.set_interval(TICK_INTERVAL, self.controller.tick)
        if self.controller.startup_error:
            self.notify(self.controller.startup_error, severity="error", timeout=12)
        self.detect_device()

    @work(thread=True, exclusive=True, group="device", exit_on_error=False)
    def detect_device(self) -> None:
        try:
            dev = self.device_loader()
        except Exception as e:          # the app still opens: training falls back to the CPU
            dev = {"cuda_available": False, "error": f"{type(e).__name__}: {e}"}
        self.call_from_thread(self.controller.set_device, dev)

    def _spawn_job(self, coro, name: str):
        # long workers belong to the App (screens come and go)
        return self.run_worker(coro, name=name, group="jobs", exit_on_error=False)

    # ---- the controller's messages ---------------------------------------------------------------
    def on_notice(self, msg: Notice) -> None:
        self.notify(msg.text, title=msg.title, severity=msg.severity, timeout=msg.timeout)  # type: ignore[arg-type]

    async def on_go_to(self, msg: GoTo) -> None:
        if self.return_code is not None:          # quitting: no new screen
            return
        if msg.action:
            await self.run_on(msg.mode, msg.action)
        else:
            await self.action_show(msg.mode)

    # ---- navigation ----------------------------------------------------------------------------
    async def action_show(self, mode: str) -> None:
        if mode in self.MODES:
            # a modal on top of the current screen stays with that screen; leave it by switching
            await self.switch_mode(mode)

    async def run_on(self, mode: str, action: str) -> None:
        """Switch to `mode` and run one of its screen's actions (the command palette uses it)."""
        await self.switch_mode(mode)
        await self.screen.run_action(action)

    # ---- quitting ------------------------------------------------------------------------------
    async def action_quit(self) -> None:
        running = self.controller.running_jobs()
        if not running or self._quitting:
            self.exit()
            return
        from tui.dialogs.base import QuitScreen

        def done(choice: str | None) -> None:
            if choice == "stop":
                self._quitting = True
                stopping = self.controller.stop_all()
                self.notify(f"stopping {len(stopping)} job(s) before quitting (ctrl+q again quits now)...",
                            timeout=10)
                self.run_worker(self._exit_when_stopped(stopping), group="quit", exit_on_error=False)
            elif choice == "detach":
                left = self.controller.detach_all()
                self.exit(message="left running: " + ", ".join(j.title for j in left) if left else None)
        await self.push_screen(QuitScreen(running), done)

    async def _exit_when_stopped(self, jobs: list) -> None:
        """Quit once the stopped jobs have ended (they are killed after their grace time)."""
        grace = max((self.controller.jobs.grace(j) for j in jobs), default=0.0)
        deadline = time.monotonic() + grace + 2.0
        while any(j.running for j in jobs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.exit()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sessrec-tui", description="Terminal app for sessrec: datasets, "
                                "training runs and recommendations, keyboard first.")
    p.add_argument("--workspace", type=Path, help="workspace folder (default $SESSREC_HOME or ./workspace)")
    args = p.parse_args(argv)
    try:
        app = SessrecApp(args.workspace)
    except Exception as e:
        print(f"sessrec-tui: {e}", file=sys.stderr)
        return 2
    result = app.run()
    if isinstance(result, str) and result:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
