"""What the reliability probes share: the engine as a subprocess, and the one-line error rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def engine(ws_root: Path, *args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """`sessrec --workspace WS ARGS` in a child process (bounded by `timeout`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "engine", "--workspace", str(ws_root), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env, **kw)


def one_line(err: str) -> str:
    """The only line of an error output (no traceback)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
