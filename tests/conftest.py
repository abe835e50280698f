"""Shared fixtures: real sample data (skipped when absent) and small hand-made logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Under pytest-xdist (`make test` runs two workers) each worker and everything it starts gets an equal
# share of the cores, set before torch, numpy or pyarrow load: two workers each starting one thread
# per core would slow each other down several times over.
if os.environ.get("PYTEST_XDIST_WORKER"):
    from engine.core.threads import THREAD_ENV_VARS, available_cores
    _share = str(max(1, available_cores() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    for _var in THREAD_ENV_VARS:
        os.environ[_var] = _share

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
    from engine.core.workspace import Workspace
    return Workspace.open(tmp_path / "ws")


# ---- training on the tiny demo (test_train, test_run_reliability) ----------------------------------
SMALL = {"hidden": 16, "heads": 2}        # a Graph Transformer that trains in seconds


def small_cfg(**kw):
    """A short Graph Transformer run on the tiny demo (override any TrainConfig field)."""
    from engine.core.config import TrainConfig
    base = dict(dataset="demo-tiny", model="graph_transformer", model_params=dict(SMALL), epochs=2,
                batch_size=256, warmup_steps=2, device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiny_demo_ws(tmp_path_factory):
    """A workspace with the tiny demo built (one per test module)."""
    from engine.cli import main as cli
    from engine.core.workspace import Workspace
    root = tmp_path_factory.mktemp("tinydemo")
    assert cli(["--workspace", str(root), "-q", "demo", "--size", "tiny"]) == 0
    return Workspace.open(root)


def chunked_demo_with_run(root: Path, epochs: int):
    """The tiny demo in two time chunks (the second not appended yet) and run 'old', a small Graph
    Transformer trained on the first chunk: the starting point of warm start and refresh."""
    from engine.cli import main as cli
    from engine.core.workspace import Workspace
    assert cli(["--workspace", str(root), "-q", "demo", "--size", "tiny", "--chunks", "2"]) == 0
    assert cli(["--workspace", str(root), "-q", "train", "--dataset", "demo-tiny", "--hidden", "16", "--heads", "2",
                "--epochs", str(epochs), "--run-id", "old", "--device", "cpu"]) == 0
    return Workspace.open(root)


def stop_after(n: int):
    """A stop flag that asks the training loop to stop after `n` steps (what SIGTERM does, but
    deterministically)."""
    from engine.train.loop import StopFlag

    class StopAfter(StopFlag):
        def __init__(self) -> None:
            super().__init__()
            self.n, self.signal = n, "test"

        @property
        def requested(self) -> bool:  # type: ignore[override]
            self.n -= 1
            return self.n < 0

        @requested.setter
        def requested(self, value: bool) -> None:
            pass
    return StopAfter()
