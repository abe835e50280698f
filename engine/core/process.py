"""Process helpers shared by the engine and the app (no heavy imports)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, NoReturn

# A job records its start time just before the process is created, and /proc/stat's boot time is
# whole seconds: a process that started up to this long after `started_at` is still the job's.
START_TOLERANCE_S = 2.0


def is_worker(environ: Mapping[str, str] | None = None) -> bool:
    """True in a process started by torchrun with more than one worker in all."""
    env = os.environ if environ is None else environ
    try:
        return "RANK" in env and int(env.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def leave_worker(code: int) -> NoReturn:
    """End a data-parallel worker now, without the interpreter's shutdown. Its results are written
    (atomically) and its process group destroyed by then, but torch's C++ objects that outlive
    Python can still abort the process at static destruction ("terminate called without an active
    exception", SIGABRT: about 1 worker exit in 50 under load on 2 cores), which the launcher takes
    for a crash of a finished run; after a lost peer, the collectives' threads would also hold up a
    normal exit (~30 s in gloo's teardown)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):      # a closed or broken pipe: nothing more can be said
            pass
    os._exit(code)


def pid_alive(pid: int | None) -> bool:
    """True when a process with this pid exists (it may belong to another user)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def process_start_time(pid: int) -> float | None:
    """Unix time at which process `pid` started, where /proc tells (None elsewhere)."""
    boot = _boot_time()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # the command name (field 2) may hold spaces and parentheses: count fields after the last ")"
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])    # field 22, starttime, in clock ticks
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return None if boot is None else boot + ticks / hz


def process_alive(pid: int | None, started_at: float | None,
                  tolerance: float = START_TOLERANCE_S) -> bool:
    """The process `pid` exists and is the one started at `started_at` (unix time): a pid the
    kernel gave to a process that started later is a reused pid, not ours. Without `started_at`,
    or where /proc does not tell start times, any process with that pid counts."""
    if not pid_alive(pid):
        return False
    if started_at is None:
        return True
    assert pid is not None
    start = process_start_time(pid)
    return start is None or start <= started_at + tolerance
