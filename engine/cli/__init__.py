"""The `sessrec` command line. Every user error is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from engine import __version__
from engine.cli import (
    ab_cmds,
    bench_cmds,
    data_cmds,
    export_cmds,
    model_cmds,
    quickstart_cmds,
    recommend_cmds,
    refresh_cmds,
    run_cmds,
    serve_cmds,
    train_cmds,
    tune_cmds,
)
from engine.cli.output import Output, err_console
from engine.core.errors import SessrecError
from engine.core.threads import process_budget
from engine.core.workspace import Workspace


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, with the usage hint, exit 2
        self.exit(2, f"sessrec: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sessrec", description="Session-based next-item recommendation with GNNs.")
    p.add_argument("--version", action="version", version=f"sessrec {__version__}")
    p.add_argument("--workspace", type=Path, help="workspace folder (default $SESSREC_HOME or ./workspace)")
    p.add_argument("--events", choices=["rich", "jsonl"], default="rich",
                   help="jsonl: machine-readable events on stdout, logs on stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=_Parser)
    data_cmds.register(sub)
    train_cmds.register(sub)
    run_cmds.register(sub)
    recommend_cmds.register(sub)
    model_cmds.register(sub)
    quickstart_cmds.register(sub)
    tune_cmds.register(sub)
    serve_cmds.register(sub)
    ab_cmds.register(sub)
    refresh_cmds.register(sub)
    bench_cmds.register(sub)
    export_cmds.register(sub)
    return p


def _sigterm_to_interrupt(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so temp files are removed and the manifest stays consistent
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:        # --help, --version, or a usage error (already printed)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)      # `train --nproc` restarts itself with them
    out = Output(args.events, args.quiet)
    process_budget().apply()       # the app's share of the cores for this job (no-op when run by hand)
    try:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    except ValueError:  # not in the main thread (tests)
        pass
    try:
        ws = Workspace.open(args.workspace)
        return int(args.func(args, ws, out) or 0)
    except SessrecError as e:
        out.emit({"type": "error", "error": str(e)})
        err_console.print(f"sessrec: error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        out.emit({"type": "error", "error": "interrupted"})
        err_console.print("sessrec: interrupted", markup=False)
        return 130
    except Exception as e:  # a bug: say so on the event stream too, then show the traceback
        import traceback
        out.emit({"type": "error", "error": f"internal error: {type(e).__name__}: {e}",
                  "traceback": traceback.format_exc(limit=12)})
        err_console.print(f"sessrec: internal error: {type(e).__name__}: {e}", markup=False)
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
