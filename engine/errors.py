"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits with 2."""

from __future__ import annotations

import os


class SessrecError(Exception):
    """Base class: the message says what was wrong and what was expected."""


class InputError(SessrecError):
    """A file or argument the user gave is missing, malformed or of the wrong kind."""


class StageError(SessrecError):
    """A pipeline stage cannot run (missing upstream artifact, empty result, ...)."""


class StorageError(SessrecError):
    """Writing a file failed (disk full, permissions, ...): says what was written, where, and why."""

    def __init__(self, what: str, path: "os.PathLike | str", error: OSError) -> None:
        self.what, self.path, self.error = what, path, error
        reason = error.strerror or str(error)
        code = f"[Errno {error.errno}] " if error.errno else ""
        super().__init__(f"could not write {what} {path}: {code}{reason}")
