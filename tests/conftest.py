"""Shared fixtures: real sample data (skipped when absent) and small hand-made logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("SESSREC_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_file(name: str) -> Path:
    """Path of a file in ../shared/data, or skip the test cleanly when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real sample {name} not present in {SHARED_DATA}")
    return path


@pytest.fixture
def workspace(tmp_path: Path):
    from engine.workspace import Workspace
    return Workspace.open(tmp_path / "ws")
