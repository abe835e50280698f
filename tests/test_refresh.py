"""`sessrec refresh` end to end on the tiny demo split in two time chunks, against a real server:
killed (SIGKILL) once after every step and once in the middle of its training, and rerun each time;
after every kill the server serves the old run or the promoted one and answers; the last rerun
finishes the cycle. Then the guard keeps the serving run when the new one is not better by the
margin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from engine.refresh.loop import KILL_ENV, read_cycle
from tests.conftest import chunked_demo_with_run
from tests.test_serve import ROOT, kill_group, start_server

ADMIN = "admin-key-0123456789abcdef"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return chunked_demo_with_run(tmp_path_factory.mktemp("refresh"), epochs=2)


def refresh_cmd(ws, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "engine", "--workspace", str(ws.root), "-q", "refresh", "demo-tiny", "--serving", url,
            "--device", "cpu", *extra]


def run_refresh(ws, url: str, *extra: str, kill_after: str | None = None, timeout: float = 240) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SESSREC_ADMIN_KEY": ADMIN}
    if kill_after:
        env[KILL_ENV] = kill_after
    return subprocess.run(refresh_cmd(ws, url, *extra), env=env, capture_output=True, timeout=timeout).returncode


def served(url: str, ids: list[int]) -> str:
    h = httpx.get(url + "/health", timeout=10).json()
    r = httpx.post(url + "/recommend", json={"session_items": ids, "k": 5}, timeout=10)
    assert r.status_code == 200 and len(r.json()["items"]) == 5       # never a broken state
    return h["run_id"]


def test_refresh_survives_a_kill_at_every_step(ws):
    chunk = str(ws.dataset("demo-tiny").demo_chunk(2))
    proc, ev = start_server(ws, "old", "--search", "exact", env={"SESSREC_ADMIN_KEY": ADMIN})
    url = ev["url"]
    try:
        ids = [1, 2, 3]                                   # raw ids (unknown ones: the popularity fallback)
        args = ("--append", chunk, "--margin", "-1", "--epochs", "3")     # margin -1: it always promotes
        folder = ws.refresh("demo-tiny")
        for step in ("started", "appended", "built"):
            assert run_refresh(ws, url, *args, kill_after=step) == -signal.SIGKILL
            assert step in read_cycle(folder) and served(url, ids) == "old"
        # killed in the middle of the warm-started training (after its first epoch's checkpoint)
        cycle = read_cycle(folder)["started"]["cycle"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SESSREC_ADMIN_KEY": ADMIN}
        p = subprocess.Popen(refresh_cmd(ws, url, *args), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        events = ws.run(f"{cycle}-warm").events
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (events.exists() and '"checkpoint"' in events.read_text()):
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
        assert "trained" not in read_cycle(folder) and served(url, ids) == "old"
        for step in ("trained", "validated", "decided"):
            assert run_refresh(ws, url, *args, kill_after=step) == -signal.SIGKILL
            assert step in read_cycle(folder) and served(url, ids) == "old"
        new = f"{cycle}-warm"
        assert run_refresh(ws, url, *args, kill_after="promoted") == -signal.SIGKILL
        assert served(url, ids) == new
        assert run_refresh(ws, url, *args) == 0                # finishes the cycle, nothing done twice
        steps = read_cycle(folder)
        assert steps["finished"]["serving"] == new and steps["finished"]["promoted"] is True
        assert served(url, ids) == new
        lines = [json.loads(x) for x in folder.events.read_text().splitlines()]
        assert [x["step"] for x in lines].count("trained") == 1 and {x["cycle"] for x in lines} == {cycle}
        resumed = [json.loads(x)["type"] for x in ws.run(new).events.read_text().splitlines()]
        assert "resumed" in resumed                            # the killed training continued, not restarted
        # the guard: nothing new and a margin no run can pass keeps the run in service
        assert run_refresh(ws, url, "--margin", "0.9", "--epochs", "1") == 0
        last = read_cycle(folder)
        assert last["decided"]["promote"] is False and last["finished"]["serving"] == new
        assert served(url, ids) == new
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            kill_group(proc)
