"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits with 2."""


class SessrecError(Exception):
    """Base class: the message says what was wrong and what was expected."""


class InputError(SessrecError):
    """A file or argument the user gave is missing, malformed or of the wrong kind."""


class StageError(SessrecError):
    """A pipeline stage cannot run (missing upstream artifact, empty result, ...)."""
