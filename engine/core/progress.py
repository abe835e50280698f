"""Progress reporting shared by every long operation.

A stage calls `report(Progress(...))` as it goes; the CLI turns these into rich progress bars (or
JSON lines with `--events jsonl`), the app into its jobs screen. Callbacks must be cheap: stages call
them a bounded number of times (per chunk, never per row).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Progress:
    stage: str                 # e.g. "ingest", "graph", "train"
    done: float                # units done so far
    total: float | None = None # None when unknown
    unit: str = ""             # "rows", "sessions", "steps", ...
    message: str = ""
    time: float = field(default_factory=time.time)

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    def to_dict(self) -> dict:
        return asdict(self)


ProgressFn = Callable[[Progress], None]


def null_progress(_: Progress) -> None:
    """The default callback: ignore progress."""


class StageReporter:
    """Small helper bound to one stage: `rep(done, total, message)` and `rep.step(message)`."""

    def __init__(self, stage: str, callback: ProgressFn | None, total: float | None = None,
                 unit: str = "steps") -> None:
        self.stage = stage
        self.callback = callback or null_progress
        self.total = total
        self.unit = unit
        self.done = 0.0

    def __call__(self, done: float, total: float | None = None, message: str = "") -> None:
        self.done = done
        if total is not None:
            self.total = total
        self.callback(Progress(self.stage, done, self.total, self.unit, message))

    def step(self, message: str = "", n: float = 1.0) -> None:
        self(self.done + n, None, message)
