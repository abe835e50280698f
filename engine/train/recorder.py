"""What a run leaves on disk, in order: its events and its checkpoints, and the one place a run ends.

The order matters for readers: a checkpoint is written before the event that mentions it, so an
epoch recorded as best always has its `best.pt` (a crash between the two loses the event, never
leaves an event pointing at a missing file).
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from typing import Any

from engine.core.errors import StorageError
from engine.core.schema import ErrorKind, RunStatus
from engine.core.workspace import RunDir
from engine.tracking import Tracker
from engine.runs.events import (
    Checkpoint,
    Epoch,
    EventWriter,
    Resumed,
    RunEvent,
    RunFailed,
    RunFinished,
    RunStarted,
    Step,
    read_events,
)
from engine.train.checkpoint import save_checkpoint


class RunFailedError(Exception):
    """A run ended with a `run_failed` event (or could not even write it)."""

    def __init__(self, event: RunFailed) -> None:
        super().__init__(event.error)
        self.event = event


class RunRecorder:
    def __init__(self, run: RunDir, tracker: Tracker | None = None) -> None:
        self.run = run
        self.tracker = tracker or Tracker()      # MLflow, when asked (engine.tracking): never fails the run
        self.writer = EventWriter(run.events, run.run_id)
        self.t_start = time.perf_counter()
        self.step_offset = 0          # logged step = optimizer step + offset (continues after a kill)
        self.ended: RunEvent | None = None

    # ---- events --------------------------------------------------------------------------------
    def started(self, **fields: Any) -> RunStarted:
        ev = RunStarted(pid=os.getpid(), host=socket.gethostname(), **fields)
        self.writer.write(ev)
        self.tracker.started(self.run, ev.to_dict())
        return ev

    def resumed(self, epoch: int, batch_in_epoch: int, checkpoint_step: int, checkpoint_offset: int) -> Resumed:
        """Mark a restart from `last.pt`. Steps logged after that checkpoint (a run killed mid-epoch)
        are trained again; the step numbers keep counting from the last one logged, so the loss
        curve never goes backwards."""
        logged = max((e.step for e in read_events(self.run.events) if isinstance(e, Step)), default=0)
        at_ckpt = checkpoint_step + checkpoint_offset
        self.step_offset = max(checkpoint_offset, logged - checkpoint_step)
        ev = Resumed(epoch=epoch, batch_in_epoch=batch_in_epoch, checkpoint_step=checkpoint_step,
                     step=logged, redone_steps=max(0, logged - at_ckpt))
        return self.writer.write(ev)  # type: ignore[return-value]

    def step_due(self, last_of_epoch: bool) -> bool:
        return self.writer.step_due() or last_of_epoch

    def step(self, step: int, **fields: Any) -> None:
        self.writer.write(Step(step=step + self.step_offset, **fields))
        self.tracker.step(step + self.step_offset, fields)

    def checkpoint(self, kind: str, payload: dict[str, Any], epoch: int, step: int) -> None:
        """Write `best.pt` / `last.pt` (atomically), then its event."""
        path = self.run.checkpoint(kind)
        save_checkpoint(path, {**payload, "step_offset": self.step_offset})
        self.writer.write(Checkpoint(kind=kind, path=path.name, epoch=epoch, step=step))

    def epoch(self, **fields: Any) -> None:
        self.writer.write(Epoch(**fields))
        self.tracker.epoch(fields)

    # ---- the end -------------------------------------------------------------------------------
    def finish(self, status: RunStatus, **fields: Any) -> RunFinished:
        """The run ends normally: completed, early stopped or stopped (resumable)."""
        ev = RunFinished(status=status.value, seconds=round(time.perf_counter() - self.t_start, 2), **fields)
        self.ended = self.writer.write(ev)
        self.tracker.finished(self.run, ev.to_dict())
        return ev

    def fail(self, exc: BaseException, kind: ErrorKind, batch_size: int | None = None,
             suggestion: str = "") -> RunFailed:
        """The run ends with an error: record it if the disk lets us, and return the event."""
        if isinstance(exc, StorageError):
            kind, error = ErrorKind.OS_ERROR, str(exc)
        elif kind == ErrorKind.INTERRUPTED:
            error = "interrupted before a checkpoint could be written"
        elif kind == ErrorKind.CUDA_OOM:
            error = f"CUDA out of memory at batch size {batch_size}: {exc}"[:500]
        else:
            error = f"{type(exc).__name__}: {exc}"[:2000]
        ev = RunFailed(error=error, error_kind=kind.value, batch_size=batch_size, suggestion=suggestion,
                       traceback="" if kind in (ErrorKind.INTERRUPTED, ErrorKind.OS_ERROR)
                       else traceback.format_exc(limit=8))
        try:
            self.ended = self.writer.write(ev)
        except StorageError:
            pass                      # the disk is full: the caller still reports the error
        self.tracker.failed(ev.to_dict())
        return ev

    def close(self) -> None:
        self.writer.close()
