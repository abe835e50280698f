"""Folder locks held by the process that writes a run or builds a dataset, and the one liveness rule.

A run (or a dataset build) is alive exactly while its lock file is locked (`flock`, exclusive): the
kernel drops the lock when the process ends however it ends (SIGKILL and the OOM killer included),
so a stale lock or a reused pid can never make a dead process look alive. The file holds the
owner's pid, for messages.

Readers probe with a shared, non-blocking lock that they release at once; the owner's exclusive
`acquire` retries briefly, so a probe at the wrong moment never makes a start fail.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from engine.core.errors import InputError, SessrecError, StorageError

_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


class FolderLock:
    """An exclusive lock on `path`. `busy` is the error when another process holds it (`{who}`:
    "process N", `{pid}`: N), raised as `error`."""

    def __init__(self, path: Path, busy: str, what: str = "lock",
                 error: type[SessrecError] = InputError) -> None:
        self.path = Path(path)
        self.busy, self.what, self.error = busy, what, error
        self._fd: int | None = None

    def acquire(self, timeout: float = 2.0) -> "FolderLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise StorageError(self.what, self.path, e) from e
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in _BUSY:
                    os.close(fd)
                    raise StorageError(self.what, self.path, e) from e
                if time.monotonic() >= deadline:
                    os.close(fd)
                    pid = read_pid(self.path)
                    raise self.error(self.busy.format(who=f"process {pid}" if pid else "another process",
                                                      pid=pid or "it")) from None
                time.sleep(0.05)          # a reader's probe holds a shared lock for microseconds
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as e:
            os.close(fd)
            raise StorageError(self.what, self.path, e) from e
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "FolderLock":
        # `with lock.acquire(timeout=60):` holds it already: taking it again on another descriptor
        # would wait for ourselves
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunLock(FolderLock):
    """Held by the process that trains a run (new or resumed), from before its first event to
    after its last."""

    def __init__(self, path: Path, run_id: str) -> None:
        super().__init__(path, f"run {run_id!r} is being trained by {{who}}; stop it first "
                               f"(ctrl+t in the app, or kill {{pid}})", "run lock")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def lock_holder(path: Path) -> int | None:
    """The pid of the live process that holds the lock (0 when it cannot be read), or None when
    nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None                   # no lock file: never locked
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            return (read_pid(path) or 0) if e.errno in _BUSY else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
