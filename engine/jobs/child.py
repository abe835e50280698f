"""A job's child process: how it is started (`python -m engine --workspace W --events jsonl ...`, in
a session of its own so that a training can outlive the app), how its stdout is read (a thread that
owns the pipe), what each JSON line means for the job, how it is signalled, and how its exit is
said in words."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

from engine.jobs.records import Job, StageProgress


def engine_command() -> list[str]:
    """How the runner starts the engine: the same interpreter, so it works without the console script."""
    return [sys.executable, "-m", "engine"]


def describe_exit(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -rc == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit status {rc}"


def popen(job: Job, env: dict[str, str]) -> subprocess.Popen:
    """Start the job's process: stdout piped (its JSON lines), stderr appended to its log file."""
    with open(job.log_path, "ab") as log:
        return subprocess.Popen(job.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True, env=env, close_fds=True)


def pump_lines(proc: subprocess.Popen, loop: asyncio.AbstractEventLoop, out: asyncio.Queue) -> None:
    """Thread body: put each stdout line of `proc` on `out` (then None at EOF). If the loop is gone
    (the app quit and left the child detached), close the pipe: the child's next write fails and the
    engine carries on without stdout (it writes its events file anyway)."""
    pipe = proc.stdout
    assert pipe is not None
    try:
        for raw in iter(pipe.readline, b""):
            try:
                loop.call_soon_threadsafe(out.put_nowait, raw)
            except RuntimeError:           # event loop closed
                break
    except (OSError, ValueError):
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass
        try:
            loop.call_soon_threadsafe(out.put_nowait, None)
        except RuntimeError:
            pass


def apply_line(job: Job, line: str) -> dict | None:
    """What one stdout line of the engine tells about the job (progress, error, result, a server's
    address); the event, or None for a blank or non-JSON line (a stray print: kept with the log)."""
    line = line.strip()
    if not line:
        return None
    try:
        ev = json.loads(line)
    except json.JSONDecodeError:
        job.append_log([line])
        return None
    if not isinstance(ev, dict):
        return None
    t = ev.get("type")
    if t == "progress":
        name = ev.get("stage", "?")
        st = job.stages.get(name)
        if st is None:
            st = job.stages[name] = StageProgress(name)
            st.first_time, st.first_done = ev.get("time"), ev.get("done") or 0.0
        st.done, st.total, st.unit = ev.get("done") or 0.0, ev.get("total"), ev.get("unit", "")
        st.message, st.time = ev.get("message", ""), ev.get("time")
        if st.stage != "pipeline":
            job.current_stage = st.stage
        elif job.current_stage is None:
            job.current_stage = "pipeline"
    elif t == "error":
        job.error = ev.get("error")
        job.suggestion = ev.get("suggestion") or None
    elif t == "result":
        job.result = {**(job.result or {}), **ev}
    elif t == "serving":
        job.serving = ev
    return ev


def signal_group(pid: int | None, sig: int) -> bool:
    """Send `sig` to the job's process group (its whole tree: data-parallel workers, compilers),
    else to the process; False when it is gone."""
    if not pid:
        return False
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False
