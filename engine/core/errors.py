"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits with 2."""

from __future__ import annotations

import os
from pathlib import Path


class SessrecError(Exception):
    """Base class: the message says what was wrong and what was expected."""


class InputError(SessrecError):
    """A file or argument the user gave is missing, malformed or of the wrong kind."""


class StageError(SessrecError):
    """A pipeline stage cannot run (missing upstream artifact, empty result, ...)."""


class StorageError(SessrecError):
    """Writing a file or folder failed at the OS level (disk full, file too large, read-only, ...).

    The message names what was being written, the path and the OS reason, e.g.
    `could not write graph stage output datasets/x/.tmp-graph.abc/graph.npz: [Errno 28] No space
    left on device`.
    """

    def __init__(self, what: str, path: Path, error: OSError) -> None:
        self.what, self.path, self.error = what, Path(path), error
        super().__init__(f"could not write {what} {path}: {os_reason(error)}")

    def __reduce__(self):  # picklable (multiprocessing), though __init__ takes three arguments
        return type(self), (self.what, self.path, self.error)


def os_reason(error: OSError) -> str:
    """`[Errno 28] No space left on device`: the OS's own words when the errno is known (pyarrow's
    strerror repeats itself), else the error's text."""
    if error.errno:
        return f"[Errno {error.errno}] {os.strerror(error.errno)}"
    return str(error) or type(error).__name__
