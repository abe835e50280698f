"""A run's event stream: one JSON object per line in `runs/<id>/events.jsonl`, the single source of
its state (the CLI, the benchmarks and every screen of the app fold it with `engine.runs.state`).

Types, in order of appearance (each also has `type`, `time` (unix seconds) and `run_id`):
  run_started   the process, device, model size and shape of the run (again after each resume)
  resumed       a restart from `last.pt`: where it resumes, and how many logged steps were redone
  step          training progress, at most a few per second (`EventWriter.min_interval_s`)
  epoch         train loss, validation result, the best epoch so far (written after `best.pt`)
  checkpoint    `best.pt` / `last.pt` written (file name in the run folder)
  run_finished  completed | early_stopped | stopped, best validation, test (both protocols)
  run_failed    error, its kind (error, cuda_oom, cuda_error, os_error, interrupted), a suggestion

Reading is tolerant: a torn last line (a crash mid-write) waits in the tail until it is completed,
and a line that is not valid UTF-8 JSON of a known event object is skipped and counted, never fatal.
Writing starts every event on a fresh line (`engine.core.atomic.LineAppender`): an event appended after
a torn one (a full disk, a kill) is kept; the torn line is closed and skipped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engine.core.atomic import LineAppender, _json_default
from engine.core.schema import ErrorKind, RunStatus


# ---- event types ----------------------------------------------------------------------------------
@dataclass
class RunEvent:
    """Fields every event has. Subclasses declare their own; all have defaults, so an event written
    by an older version (a field missing) still parses."""

    TYPE: ClassVar[str] = ""
    run_id: str = ""
    time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, **dataclasses.asdict(self)}


@dataclass
class RunStarted(RunEvent):
    TYPE: ClassVar[str] = "run_started"
    config: dict = field(default_factory=dict)
    dataset: str | None = None
    model: str | None = None
    kind: str | None = None
    device: str | None = None
    device_info: dict = field(default_factory=dict)
    n_params: int | None = None
    n_items: int | None = None
    train_examples: int | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None
    pid: int | None = None
    host: str | None = None
    oracle: dict | None = None
    resumed_from: dict | None = None
    warm_start: dict | None = None      # the older run it started from, and its item mapping


@dataclass
class Resumed(RunEvent):
    TYPE: ClassVar[str] = "resumed"
    epoch: int = 0               # completed epochs in the checkpoint
    batch_in_epoch: int = 0      # batches of the next epoch already done
    checkpoint_step: int = 0     # optimizer steps in the checkpoint
    step: int = 0                # the last step number logged before the restart
    redone_steps: int = 0        # logged steps after the checkpoint, trained again


@dataclass
class Step(RunEvent):
    TYPE: ClassVar[str] = "step"
    epoch: int = 0
    step: int = 0                # logged step number: keeps counting across restarts
    epoch_step: int = 0
    steps_per_epoch: int = 0
    loss: float | None = None
    lr: float | None = None
    examples_per_s: float | None = None
    eta_s: float | None = None
    gpu_mem_mb: float | None = None


@dataclass
class Epoch(RunEvent):
    TYPE: ClassVar[str] = "epoch"
    epoch: int = 0
    train_loss: float | None = None
    epoch_seconds: float | None = None
    val: dict = field(default_factory=dict)      # an evaluation result: {protocol, metrics, ...}
    best_epoch: int | None = None
    best_value: float | None = None
    improved: bool = False
    patience_left: int | None = None


@dataclass
class Checkpoint(RunEvent):
    TYPE: ClassVar[str] = "checkpoint"
    kind: str = ""               # best | last
    path: str = ""               # file name inside the run folder
    epoch: int = 0
    step: int = 0


@dataclass
class RunFinished(RunEvent):
    TYPE: ClassVar[str] = "run_finished"
    status: str = RunStatus.COMPLETED.value
    reason: str | None = None
    best_epoch: int | None = None
    best_val: dict | None = None
    val: dict | None = None      # protocol -> evaluation result (best epoch)
    test: dict | None = None     # protocol -> evaluation result (best epoch)
    seconds: float | None = None
    epochs_run: int = 0


@dataclass
class RunFailed(RunEvent):
    TYPE: ClassVar[str] = "run_failed"
    error: str = ""
    error_kind: str = ErrorKind.ERROR.value
    batch_size: int | None = None
    suggestion: str = ""
    traceback: str = ""


EVENT_TYPES: dict[str, type[RunEvent]] = {c.TYPE: c for c in (RunStarted, Resumed, Step, Epoch, Checkpoint,
                                                               RunFinished, RunFailed)}
_NUMBER = (int, float)


def _type_ok(value: Any, default: Any) -> bool:
    """A loose check against the field's default: numbers for numbers, dicts for dicts, ..."""
    if value is None or default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, _NUMBER):
        return isinstance(value, _NUMBER) and not isinstance(value, bool)
    return isinstance(value, type(default))


def parse_event(obj: Any) -> RunEvent | None:
    """A typed event from a decoded JSON line; None for a non-object, an unknown type or a field
    of the wrong type (the reader counts those as skipped)."""
    if not isinstance(obj, dict):
        return None
    cls = EVENT_TYPES.get(obj.get("type"))  # type: ignore[arg-type]
    if cls is None:
        return None
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in obj:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if not _type_ok(obj[f.name], default):
            return None
        kwargs[f.name] = obj[f.name]
    return cls(**kwargs)


# ---- writing --------------------------------------------------------------------------------------
class EventWriter:
    """Appends events to a run's events file."""

    def __init__(self, path: Path, run_id: str, min_interval_s: float = 0.5) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.min_interval_s = min_interval_s
        self._file = LineAppender(self.path, "run events")   # each event starts on a fresh line
        self._last_step = 0.0

    def write(self, event: RunEvent) -> RunEvent:
        event.run_id, event.time = self.run_id, round(time.time(), 3)
        self._file.append(json.dumps(event.to_dict(), default=_json_default))
        return event

    def step_due(self) -> bool:
        """Bounded rate for step events."""
        now = time.monotonic()
        if now - self._last_step >= self.min_interval_s:
            self._last_step = now
            return True
        return False

    def close(self) -> None:
        self._file.close()


def append_event(path: Path, run_id: str, event: RunEvent) -> RunEvent:
    """One event appended to a run's events file by a process that does not own the run (its final
    `run_failed` when the process that did is gone)."""
    writer = EventWriter(path, run_id)
    try:
        return writer.write(event)
    finally:
        writer.close()


# ---- reading --------------------------------------------------------------------------------------
class EventTail:
    """Follows an events file: each `poll()` returns the events of the lines completed since the
    last call. Reads bytes (a non-UTF-8 byte spoils one line, not the file); a line without its
    newline yet is kept until it is completed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.pos = 0
        self.partial = b""
        self.skipped = 0         # complete lines that are not events

    def poll(self, max_bytes: int = 1 << 24) -> list[RunEvent]:
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                if size < self.pos:          # truncated or replaced: start over
                    self.pos, self.partial = 0, b""
                f.seek(self.pos)
                data = f.read(max_bytes)
        except OSError:
            return []
        if not data:
            return []
        self.pos += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        out = []
        for raw in lines:
            raw = raw.strip()
            if not raw:
                continue
            try:
                ev = parse_event(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                ev = None
            if ev is None:
                self.skipped += 1
            else:
                out.append(ev)
        return out

    def read_all(self) -> list[RunEvent]:
        """Everything complete in the file now."""
        out: list[RunEvent] = []
        while batch := self.poll():
            out.extend(batch)
        return out


def read_events(path: Path) -> list[RunEvent]:
    """All complete events of a file (a torn last line is left out)."""
    return EventTail(path).read_all()
