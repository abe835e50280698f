"""`python -m engine ...` is the same as the `sessrec` command (used on machines without an install)."""

from engine.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
