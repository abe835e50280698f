"""Append-only JSON-lines logs written off the request path, and reading them back.

A request hands its record (a dict) to `EventLog.put`, which only queues it; one writer thread per
log takes everything queued, appends it as whole lines (`engine.core.atomic.LineAppender`: a line
cut short by a crash or a full disk is closed and skipped by readers, never glued to the next) and
starts a new file past `rotate_bytes`. Files are never rewritten: `<kind>-<start>-<pid>-<seq>.jsonl`
in the experiment's folder, so several processes and restarts never write to one file. `close()`
writes what is queued before it returns (a server's shutdown loses nothing it answered); counts of
lines queued, written and lost (a write the disk refused) are kept for /health and the tests.
Lines reach the OS page cache at once (no fsync): a killed server keeps them, a power cut may not.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path

from engine.core.atomic import LineAppender
from engine.core.errors import StorageError
from engine.core.workspace import ExperimentDir

ROTATE_BYTES = 64 << 20
_STOP = object()
_FILE_SEQ = itertools.count(1)    # unique file names for every log this process opens


class EventLog:
    def __init__(self, folder: ExperimentDir, kind: str, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.folder, self.kind, self.rotate_bytes = folder, kind, rotate_bytes
        self.queued = self.written = self.lost = 0
        self._stamp = time.strftime("%Y%m%dT%H%M%S")
        self._file: LineAppender | None = None
        self._size = 0
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        folder.root.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name=f"sessrec-{kind}-log", daemon=True)
        self._thread.start()

    def put(self, record: dict) -> None:
        self.queued += 1
        self._q.put(record)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop (idempotent)."""
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join(timeout)

    @property
    def path(self) -> Path | None:
        return self._file.path if self._file is not None else None

    def _loop(self) -> None:
        while True:
            batch, stop = [self._q.get()], False
            while True:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if any(r is _STOP for r in batch):
                stop = True
                batch = [r for r in batch if r is not _STOP]
            if batch:
                self._write(batch)
            if stop:
                if self._file is not None:
                    self._file.close()
                return

    def _write(self, records: list[dict]) -> None:
        """Append `records`, in order, starting a new file whenever the current one is full."""
        lines = [json.dumps(r, separators=(",", ":")) for r in records]
        start = 0
        while start < len(lines):
            try:
                if self._file is None or self._size >= self.rotate_bytes:
                    self._rotate()
                end, room = start, self.rotate_bytes - self._size
                while end < len(lines) and (end == start or room > len(lines[end])):
                    room -= len(lines[end]) + 1
                    end += 1
                text = "\n".join(lines[start:end])
                self._file.append(text)
                self._size += len(text) + 1
                self.written += end - start
            except StorageError as e:      # the service goes on; the loss is counted and said once
                if not self.lost:
                    print(f"sessrec: {self.kind} log: {e}; lines are being lost", file=sys.stderr)
                end = len(lines)
                self.lost += end - start
            start = end

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
        path = self.folder.new_log(self.kind, self._stamp, os.getpid(), next(_FILE_SEQ))
        self._file = LineAppender(path, f"{self.kind} log")
        self._size = path.stat().st_size


def read_log(folder: ExperimentDir, kind: str) -> tuple[list[dict], int]:
    """Every record of `kind` in the experiment's files, in file order, and the number of lines
    skipped (torn by a crash, or not a JSON object)."""
    records, skipped = [], 0
    for path in folder.logs(kind):
        with open(path, "rb") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    skipped += bool(line.strip())
                    continue
                if isinstance(r, dict):
                    records.append(r)
                else:
                    skipped += 1
    return records, skipped
