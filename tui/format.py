"""Text formatting shared by the screens: numbers, durations, ASCII bars, paths, status styles."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from engine.core.schema import JobStatus, RunStatus, StageState

STATE_STYLE = {StageState.DONE: "green", StageState.STALE: "yellow", StageState.MISSING: "dim",
               StageState.FAILED: "red bold", StageState.BUILDING: "cyan"}
JOB_STYLE = {JobStatus.RUNNING: "cyan", JobStatus.STARTING: "cyan", JobStatus.QUEUED: "blue",
             JobStatus.STOPPING: "yellow", JobStatus.DONE: "green", JobStatus.FAILED: "red bold",
             JobStatus.CANCELLED: "yellow", JobStatus.STOPPED: "yellow", JobStatus.INTERRUPTED: "red",
             JobStatus.DETACHED: "magenta"}
RUN_STYLE = {RunStatus.RUNNING: "cyan", RunStatus.STARTING: "cyan", RunStatus.COMPLETED: "green",
             RunStatus.EARLY_STOPPED: "green", RunStatus.STOPPED: "yellow", RunStatus.FAILED: "red bold",
             RunStatus.INTERRUPTED: "red", RunStatus.UNREADABLE: "red"}


def fmt_num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return "-"
        if v == int(v) and (abs(v) >= 1000 or digits >= 4):
            return f"{int(v):,}"
        return f"{v:.{digits}f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_bar(fraction: float | None, width: int = 20) -> str:
    """A text progress bar (ASCII, so it reads the same over any SSH terminal)."""
    if fraction is None:
        return "[" + "." * width + "]"
    n = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * n + "." * (width - n) + "]"


def short_path(path: str | os.PathLike | None, root: str | os.PathLike | None = None) -> str:
    """A path relative to `root` (or else the current folder) when inside it, else with ~ for the
    home folder."""
    if not path:
        return "-"
    p = Path(path)
    if root is not None:
        try:
            return str(p.resolve().relative_to(Path(root).resolve()))
        except (ValueError, OSError):
            pass
    try:
        rel = p.resolve().relative_to(Path.cwd().resolve())
        return str(rel) if str(rel) != "." else "."
    except (ValueError, OSError):
        pass
    home = str(Path.home())
    s = str(p)
    return "~" + s[len(home):] if home not in ("/", "") and s.startswith(home + os.sep) else s


def sort_rows(rows: list[dict], key: str, reverse: bool = False) -> list[dict]:
    """Missing values always last, whichever the direction."""
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]

    def k(r: dict) -> Any:
        v = r[key]
        return (0, v) if isinstance(v, (int, float)) else (1, str(v))
    return sorted(present, key=k, reverse=reverse) + missing
