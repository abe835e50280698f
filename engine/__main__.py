"""`python -m engine ...` is the same as the `sessrec` command (used on machines without an install, and
by `sessrec train --nproc N` to start its workers)."""

from engine.cli import main
from engine.core.process import is_worker, leave_worker

if __name__ == "__main__":
    code = main()
    if is_worker():                # a data-parallel worker skips the interpreter's shutdown (see leave_worker)
        leave_worker(code)
    raise SystemExit(code)
