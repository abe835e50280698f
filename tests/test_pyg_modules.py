"""PyG's generated modules go to sessrec's cache, once per module text, never to the system temp folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path, cache: Path) -> dict[str, str]:
    return dict(os.environ, TMPDIR=str(tmp), SESSREC_CACHE=str(cache), PYTHONPATH=str(ROOT),
                OMP_NUM_THREADS="1")


def _pyg_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("torch_geometric*.py"))


def test_training_and_serving_leave_no_generated_module_in_the_temp_folder(tiny_demo_ws, tmp_path: Path) -> None:
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    env = _env(tmp, cache)
    ws = str(tiny_demo_ws.root)
    train = [sys.executable, "-m", "engine", "--workspace", ws, "-q", "train", "--dataset", "demo-tiny",
             "--model", "gat", "--epochs", "1", "--hidden", "16", "--heads", "2", "--run-id", "pyg-gat",
             "--device", "cpu"]
    out = subprocess.run(train, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # serving loads the run in a new process: the same modules, found in the cache
    first = _pyg_files(cache)
    assert first and all(n.startswith(("torch_geometric.nn.conv.gat_conv_GATConv_propagate_",
                                       "torch_geometric.nn.conv.gat_conv_GATConv_edge_updater_")) for n in first)
    rec = [sys.executable, "-m", "engine", "--workspace", ws, "-q", "recommend", "pyg-gat", "1", "2"]
    out = subprocess.run(rec, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _pyg_files(cache) == first                    # reused, not written again under new names
    assert _pyg_files(tmp) == []                         # nothing in the (per-test) system temp folder


def test_every_conv_kind_builds_through_the_cache(tmp_path: Path) -> None:
    """GraphSAGE, GAT and the Graph Transformer: one file per generated module, loadable, and PyG's
    own code path (the system temp folder) untouched."""
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    code = ("import torch\n"
            "from engine.models.layers import ConvBlock\n"
            "x = torch.randn(5, 8); ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]]); w = torch.ones(4, 1)\n"
            "for conv in ('sage', 'gat', 'transformer'):\n"
            "    ConvBlock(conv, 8, heads=2, dropout=0.0)(x, ei, w)\n")
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp, cache), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    names = _pyg_files(cache)
    for cls in ("SAGEConv_propagate", "GATConv_propagate", "GATConv_edge_updater", "TransformerConv_propagate"):
        assert sum(cls in n for n in names) == 1, names
    assert _pyg_files(tmp) == []


def test_an_unwritable_cache_falls_back_to_pygs_own_files(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    code = ("import torch\n"
            "from engine.models.layers import ConvBlock\n"
            "x = torch.randn(3, 8); ei = torch.tensor([[0, 1], [1, 2]])\n"
            "print(ConvBlock('sage', 8, heads=1, dropout=0.0)(x, ei, torch.ones(2, 1)).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp, blocker / "cache"), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch.Size([3, 8])" in out.stdout
    assert any("SAGEConv_propagate" in n for n in _pyg_files(tmp))       # PyG wrote it where it always does
