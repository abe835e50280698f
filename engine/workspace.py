"""Where datasets and runs live.

    <workspace>/datasets/<name>/manifest.json, <stage>/...   (see engine/data/pipeline.py)
    <workspace>/runs/<run-id>/config.json, events.jsonl, best.pt, last.pt

The workspace is `--workspace`, else $SESSREC_HOME, else ./workspace.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_root() -> Path:
    return Path(os.environ.get("SESSREC_HOME") or "workspace")


def check_name(name: str, what: str = "dataset name") -> str:
    if not NAME_RE.match(name or ""):
        raise InputError(f"{what} {name!r}: use 1-64 letters, digits, '_', '-', '.' "
                         f"(starting with a letter or digit)")
    return name


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike | None = None) -> "Workspace":
        path = Path(root) if root is not None else default_root()
        if path.exists() and not path.is_dir():
            raise InputError(f"workspace {path}: exists and is not a folder")
        return cls(path.expanduser().resolve())

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def downloads_dir(self) -> Path:
        return self.root / "downloads"

    def dataset_dir(self, name: str) -> Path:
        return self.datasets_dir / check_name(name)

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / check_name(run_id, "run id")

    def dataset_names(self) -> list[str]:
        if not self.datasets_dir.is_dir():
            return []
        return sorted(p.name for p in self.datasets_dir.iterdir()
                      if p.is_dir() and (p / "manifest.json").exists())

    def run_ids(self) -> list[str]:
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir()
                      if p.is_dir() and (p / "config.json").exists())
