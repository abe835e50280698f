"""How the CLI talks: rich tables and progress bars for people, JSON lines for programs.

With `--events jsonl` every progress/event object goes to stdout as one JSON line and human logs go
to stderr, so a parent process (the app) can read stdout line by line.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from engine.core.atomic import _json_default
from engine.core.progress import Progress
from engine.core.threads import process_budget

err_console = Console(stderr=True, highlight=False)


class Output:
    """One per CLI invocation: `emit` structured events, `progress` callback, `table`, `log`."""

    def __init__(self, mode: str = "rich", quiet: bool = False) -> None:
        self.mode = mode                       # "rich" | "jsonl"
        self.quiet = quiet
        self.console = Console(highlight=False) if mode == "rich" else err_console
        self._bars: RichProgress | None = None
        self._tasks: dict[str, Any] = {}
        self._last_emit: dict[str, float] = {}

    # ---- structured events ---------------------------------------------------------------------
    def emit(self, obj: dict) -> None:
        if self.mode == "jsonl" and not getattr(self, "_detached", False):
            try:
                sys.stdout.write(json.dumps(obj, default=_json_default) + "\n")
                sys.stdout.flush()
            except (BrokenPipeError, OSError, ValueError):
                self._detached = True    # reader gone (app quit, run left detached): carry on

    def log(self, msg: str) -> None:
        if not self.quiet:
            (err_console if self.mode == "jsonl" else self.console).print(msg, markup=False)

    def print(self, renderable: Any) -> None:
        if self.mode == "jsonl":
            err_console.print(renderable)
        else:
            self.console.print(renderable)

    def result(self, obj: dict, renderable: Any = None) -> None:
        """A command's final answer: JSON line in jsonl mode, the renderable otherwise."""
        if self.mode == "jsonl":
            self.emit({"type": "result", **obj})
        elif renderable is not None:
            self.console.print(renderable)

    # ---- progress ------------------------------------------------------------------------------
    def __enter__(self) -> "Output":
        if self.mode == "rich" and not self.quiet:
            self._bars = RichProgress(SpinnerColumn(), TextColumn("{task.description:<11}"),
                                      BarColumn(bar_width=24), TaskProgressColumn(), TimeElapsedColumn(),
                                      TextColumn("{task.fields[msg]}"), console=self.console,
                                      transient=False)
            self._bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.__exit__(*exc)  # type: ignore[arg-type]
            self._bars = None
            self._tasks.clear()

    def log_stderr(self, message: str) -> None:
        """`log`, but on stderr in every mode (training's messages: stdout keeps only the result)."""
        if not self.quiet:
            err_console.print(message, markup=False)

    def progress(self, p: Progress) -> None:
        # every long command but training reports here: the one place where a pipeline picks up a
        # new thread budget from the app (another job started or ended); cheap when nothing changed
        process_budget().poll()
        if self.mode == "jsonl":
            # bounded rate per stage (always pass the final update through)
            now = time.monotonic()
            final = p.total is not None and p.done >= p.total
            if final or now - self._last_emit.get(p.stage, 0.0) >= 0.2:
                self._last_emit[p.stage] = now
                self.emit({"type": "progress", **p.to_dict()})
            return
        if self._bars is None:
            return
        if p.stage == "pipeline":      # stage boundaries: the per-stage bars say it already
            return
        task = self._tasks.get(p.stage)
        if task is None:
            task = self._bars.add_task(p.stage, total=p.total, unit=p.unit, msg=p.message)
            self._tasks[p.stage] = task
        self._bars.update(task, completed=p.done, total=p.total, unit=p.unit, msg=p.message[:36])
