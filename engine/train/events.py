"""A run's event stream: one JSON object per line in runs/<id>/events.jsonl (and on stdout).

Types, in order of appearance:
  run_started   {run_id, config, dataset, model, device, device_info, n_params, train_examples,
                 steps_per_epoch, epochs, resumed_from, pid}
  step          {epoch, step, epoch_step, steps_per_epoch, loss, lr, examples_per_s, eta_s, gpu_mem_mb}
                (at most a few per second: `min_interval_s`)
  epoch         {epoch, train_loss, epoch_seconds, val: {protocol, metrics, ...}, best_epoch,
                 best_value, improved, patience_left}
  checkpoint    {kind: best|last, path, epoch, step}
  run_finished  {status: completed|early_stopped|stopped, best_epoch, best_val, val: {...}, test: {last, prefixes},
                 seconds}
  run_failed    {error, error_kind: error|cuda_oom|interrupted, batch_size, suggestion, traceback}
Every event also has `type`, `time` (unix seconds) and `run_id`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from engine.atomic import _json_default

EVENTS_FILE = "events.jsonl"


class RunLog:
    def __init__(self, run_dir: Path, run_id: str, to_stdout: bool = False,
                 min_interval_s: float = 0.5) -> None:
        self.path = run_dir / EVENTS_FILE
        self.run_id = run_id
        self.to_stdout = to_stdout
        self.min_interval_s = min_interval_s
        self._file: TextIO = open(self.path, "a", buffering=1)
        self._last_step = 0.0

    def emit(self, type_: str, **fields: Any) -> dict:
        obj = {"type": type_, "time": round(time.time(), 3), "run_id": self.run_id, **fields}
        line = json.dumps(obj, default=_json_default)
        self._file.write(line + "\n")
        self._file.flush()
        if self.to_stdout:
            try:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            except (BrokenPipeError, OSError, ValueError):
                # the parent (the app) went away and left the run detached: keep training, the
                # events file has every line
                self.to_stdout = False
        return obj

    def step_due(self) -> bool:
        """Bounded rate for step events."""
        now = time.monotonic()
        if now - self._last_step >= self.min_interval_s:
            self._last_step = now
            return True
        return False

    def close(self) -> None:
        self._file.close()


def read_events(path: Path) -> list[dict]:
    """All complete events of a file; a torn last line (a crash mid-write) is ignored."""
    out = []
    if not path.exists():
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
