"""The lock a process holds on a run folder while it trains it, and the one liveness rule of runs.

A run is alive exactly while its `.lock` file is locked (`flock`, exclusive): the kernel drops the
lock when the process ends however it ends (SIGKILL and the OOM killer included), so a stale lock
or a reused pid can never make a dead run look alive. The file holds the owner's pid for messages.

Readers probe with a shared, non-blocking lock that they release at once; the owner's exclusive
`acquire` retries briefly, so a probe at the wrong moment never makes a start fail.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from engine.errors import InputError, StorageError


class RunLock:
    """Held by the process that trains a run (new or resumed), from before its first event to
    after its last."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self._fd: int | None = None

    def acquire(self, timeout: float = 2.0) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise StorageError("run lock", self.path, e) from e
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise StorageError("run lock", self.path, e) from e
                if time.monotonic() >= deadline:
                    os.close(fd)
                    pid = _read_pid(self.path)
                    who = f"process {pid}" if pid else "another process"
                    raise InputError(f"run {self.run_id!r} is being trained by {who}; stop it first "
                                     f"(ctrl+t in the app, or kill {pid or 'it'})") from None
                time.sleep(0.05)          # a reader's probe holds a shared lock for microseconds
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def lock_holder(path: Path) -> int | None:
    """The pid of the live process that holds the run lock (0 when it cannot be read), or None
    when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None                   # no lock file: never locked
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return _read_pid(path) or 0
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
