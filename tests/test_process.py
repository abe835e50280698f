"""Liveness of a recorded process: the pid exists and did not start after the job recorded its
start (a later process with the same pid is a reused pid)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from engine.core.process import process_alive, process_start_time


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="start times come from /proc")
def test_process_alive_by_start_time() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = process_start_time(proc.pid)
        assert started is not None and abs(started - time.time()) < 30
        assert process_alive(proc.pid, time.time())                # started before "now": ours
        assert process_alive(proc.pid, None)                       # no start time recorded: any process
        assert not process_alive(proc.pid, time.time() - 86_400)   # our job started a day ago: a reused pid
    finally:
        proc.kill()
        proc.wait()
    assert not process_alive(proc.pid, time.time())                # dead (and reaped)
    assert not process_alive(None, None)
