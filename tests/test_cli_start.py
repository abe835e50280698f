"""The CLI answers at once: `sessrec --help`, `runs` and `data status` import no heavy library (torch,
torch_geometric, numpy, pyarrow, pandas, scipy). The import graph is checked, not the time (the
time is in docs/benchmarks.md, measured on an idle machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torch_geometric", "numpy", "pyarrow", "pandas", "scipy")
SCRIPT = r'''
import json, sys
from engine.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.stdin.read())))
print("HEAVY=" + json.dumps(heavy), file=sys.stderr)
sys.exit(code)
'''


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clistart")
    assert cli(["--workspace", str(root), "-q", "demo", "--size", "tiny"]) == 0
    run = root / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run_id": "r1", "train": {"model": "sknn", "dataset": "demo-tiny"}}))
    (run / "events.jsonl").write_text(json.dumps({"type": "run_started", "steps_per_epoch": 0, "epochs": 0}) + "\n")
    return root


@pytest.mark.parametrize("args", [["--help"], ["runs"], ["data", "status"], ["data", "status", "demo-tiny"],
                                  ["models"], ["train", "--help"]])
def test_light_commands_import_no_heavy_library(ws: Path, args: list[str]) -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT, "--workspace", str(ws), *args], input=json.dumps(HEAVY),
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    heavy = json.loads(r.stderr.rsplit("HEAVY=", 1)[1].strip())
    assert heavy == [], f"{args} imported {heavy}"
    if args == ["runs"]:
        assert "r1" in r.stdout and "interrupted" in r.stdout
    if args[:2] == ["data", "status"]:
        assert "demo-tiny" in r.stdout
