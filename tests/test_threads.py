"""Thread budgets: the share arithmetic, the child's environment, and `ThreadBudget` picking up a
new budget from its file (a fake clock; fake torch and pyarrow modules record what was applied)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from engine.core.threads import BUDGET_FILE_ENV, THREAD_ENV_VARS, ThreadBudget, budget_env, thread_shares, write_budget


@pytest.mark.parametrize("cores,jobs,shares", [
    (2, 1, [2]), (2, 2, [1, 1]), (2, 3, [1, 1, 1]),
    (16, 1, [16]), (16, 2, [8, 8]), (16, 3, [6, 5, 5]),
    (16, 0, []),
])
def test_thread_shares(cores: int, jobs: int, shares: list[int]) -> None:
    assert thread_shares(cores, jobs) == shares


def test_budget_env(tmp_path: Path) -> None:
    env = budget_env(3, tmp_path / "j.threads")
    assert {env[v] for v in THREAD_ENV_VARS} == {"3"}
    assert "OMP_WAIT_POLICY" not in env and env[BUDGET_FILE_ENV] == str(tmp_path / "j.threads")
    assert BUDGET_FILE_ENV not in budget_env(1, None)


class FakeTorch(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("torch")
        self.threads = 99

    def get_num_threads(self) -> int:
        return self.threads

    def set_num_threads(self, n: int) -> None:
        self.threads = n


@pytest.fixture
def libs(monkeypatch):
    """Fake torch and pyarrow in sys.modules; the environment and BLAS restored afterwards."""
    from threadpoolctl import threadpool_limits
    for var in THREAD_ENV_VARS:
        monkeypatch.setenv(var, "8")
    torch = FakeTorch()
    arrow = types.ModuleType("pyarrow")
    arrow.cpu_count = 99                                          # type: ignore[attr-defined]
    arrow.set_cpu_count = lambda n: setattr(arrow, "cpu_count", n)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "pyarrow", arrow)
    with threadpool_limits(limits=None):          # restores numpy's BLAS pool on exit
        yield torch, arrow


def test_from_env_apply_and_poll(tmp_path: Path, libs) -> None:
    torch, arrow = libs
    path = tmp_path / "job.threads"
    write_budget(path, 2)
    now = [100.0]
    budget = ThreadBudget.from_env({BUDGET_FILE_ENV: str(path), "OMP_NUM_THREADS": "4"}, clock=lambda: now[0])
    assert budget.threads == 2                   # the file wins: the share may have changed since the start
    budget.apply()
    assert torch.threads == 2 and arrow.cpu_count == 2
    assert os.environ["OMP_NUM_THREADS"] == "2"  # for libraries loaded later and for child processes

    write_budget(path, 1)                        # another job started
    now[0] += 0.5
    assert not budget.poll()                     # not a second yet: no stat
    assert budget.threads == 2
    now[0] += 0.6
    assert budget.poll()
    assert budget.threads == 1 and torch.threads == 1 and arrow.cpu_count == 1
    assert {os.environ[v] for v in THREAD_ENV_VARS} == {"1"}
    now[0] += 2
    assert not budget.poll()                     # unchanged file

    write_budget(path, 2)                        # the other job ended
    assert budget.poll(force=True) and torch.threads == 2
    path.unlink()
    assert not budget.poll(force=True) and budget.threads == 2    # a missing file keeps the budget


def test_no_budget_changes_nothing(libs) -> None:
    torch, arrow = libs
    budget = ThreadBudget.from_env({})
    assert budget.threads is None
    budget.apply()
    assert not budget.poll(force=True)
    assert torch.threads == 99 and arrow.cpu_count == 99 and os.environ["OMP_NUM_THREADS"] == "8"


def _python(code: str, env: dict[str, str]) -> list[str]:
    env = dict(os.environ, **env, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return out.stdout.split()


def test_apply_never_imports_torch(tmp_path: Path) -> None:
    path = tmp_path / "job.threads"
    write_budget(path, 1)                        # changed since the start (the environment says 2)
    code = ("import sys, pyarrow; from engine.core.threads import process_budget; process_budget().apply(); "
            "print(pyarrow.cpu_count(), 'torch' in sys.modules)")
    assert _python(code, budget_env(2, path)) == ["1", "False"]


def test_cli_main_applies_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "job.threads"
    write_budget(path, 1)
    code = (f"import pyarrow; from engine.cli import main; main(['--workspace', {str(tmp_path / 'ws')!r}, "
            "'data', 'delete', 'nope', '--yes']); print(pyarrow.cpu_count())")
    assert _python(code, budget_env(2, path))[-1:] == ["1"]
