"""Reliability probes of runs (issue 21): an event written at a full disk, trainings killed before
their first checkpoint (a retry loop over the kill time), and rebuilding a dataset a live training
reads."""

from __future__ import annotations

import errno
import json
import os

import pytest

from engine.errors import StorageError
from engine.runs.events import EventWriter, Resumed, RunStarted, append_event, read_events


# ---- 11. appends start on a fresh line ---------------------------------------------------------------
def test_11_an_event_after_a_torn_line_is_kept(tmp_path):
    path = tmp_path / "events.jsonl"
    started = json.dumps({"type": "run_started", "run_id": "r", "time": 1.0, "epochs": 3})
    path.write_text(started + "\n" + '{"type": "step", "run_id": "r", "ste')     # torn at ENOSPC
    append_event(path, "r", Resumed(epoch=1, step=7))
    events = read_events(path)
    assert [type(e) for e in events] == [RunStarted, Resumed] and events[1].step == 7
    assert path.read_text().splitlines()[1] == '{"type": "step", "run_id": "r", "ste'   # closed, skipped


def test_11_a_write_cut_short_by_a_full_disk_does_not_glue_the_next_one(tmp_path, monkeypatch):
    import engine.atomic as atomic
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path, "r")
    writer.write(RunStarted(epochs=3))
    real_write, fd = os.write, writer._file._fd
    calls = []

    def full_disk(f: int, data) -> int:
        if f == fd and not calls:               # the first append: 10 bytes fit, then ENOSPC
            calls.append(real_write(f, bytes(data[:10])))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(f, data)
    monkeypatch.setattr(atomic.os, "write", full_disk)
    with pytest.raises(StorageError, match="No space left on device"):
        writer.write(Resumed(epoch=1, step=5))
    writer.write(Resumed(epoch=1, step=6))      # the disk has room again
    writer.close()
    events = read_events(path)
    assert [(type(e), getattr(e, "step", None)) for e in events] == [(RunStarted, None), (Resumed, 6)]
    assert len(path.read_text().splitlines()) == 3      # started, the torn 10 bytes, resumed
