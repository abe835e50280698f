"""The data side works without torch: a subprocess refuses `torch` on import, imports the pipeline,
the demo package, the example enumeration and the metrics, builds the tiny demo with its oracle stage,
and checks nothing pulled torch in (dataset builds stay light; the oracle shares the evaluator's
definitions without its dependencies)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import sys

class Block:
    """A meta path finder that refuses torch (and so anything that needs it)."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torch_geometric"):
            raise ImportError(f"blocked in this test: {name}")
        return None

sys.meta_path.insert(0, Block())

import engine.data.pipeline, engine.data.demo, engine.data.examples, engine.core.metrics
from engine.core.config import DataConfig
from engine.data.demo import generate_demo
from engine.data.manifest import Dataset
from engine.data.pipeline import build
from engine.core.workspace import Workspace

ws = Workspace.open(sys.argv[1])
paths = ws.dataset("t")
generate_demo(paths.demo_events, paths.demo_truth, "tiny", seed=0)
build(Dataset.create(ws, "t", paths.demo_events, DataConfig(format="retailrocket"),
                     demo={"size": "tiny", "seed": 0}))
assert paths.oracle.exists()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torch_geometric"))
assert not loaded, loaded
print("DATA-WITHOUT-TORCH-OK")
'''


def test_pipeline_and_demo_oracle_run_without_torch(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "ws")], cwd=ROOT,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "DATA-WITHOUT-TORCH-OK" in r.stdout
