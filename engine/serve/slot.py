"""The model in service and its hot reload.

A request takes the current `Served` (counted in flight) and gives it back when answered. A reload
loads the new model in a background thread while the old one keeps answering, then swaps the
reference under a lock: requests in flight finish on the old model, whose scoring thread stops
once the last of them is answered. A reload that fails keeps the old model and records why.

With several worker processes a reload is broadcast through a small file (`ReloadBroadcast`):
each worker polls it and reloads when its generation changes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engine.core.atomic import write_json
from engine.inference.recommend import Recommender
from engine.serve.batcher import Batcher

Loader = Callable[[str], Recommender]


@dataclass
class Served:
    target: str
    rec: Recommender
    batcher: Batcher = field(init=False)
    inflight: int = 0
    retired: bool = False

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.rec)


class ModelSlot:
    def __init__(self, loader: Loader, target: str, on_reload: Callable[[bool, Recommender | None], None]
                 | None = None) -> None:
        self._loader, self._on_reload = loader, on_reload
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        self.current = Served(target, loader(target))     # errors here stop the server before it listens
        self.state: dict = {"state": "idle", "target": target, "error": None, "finished_at": None}

    # ---- requests --------------------------------------------------------------------------------
    def acquire(self) -> Served:
        with self._lock:
            s = self.current
            s.inflight += 1
            return s

    def release(self, s: Served) -> None:
        with self._lock:
            s.inflight -= 1
            done = s.retired and s.inflight == 0
        if done:
            s.batcher.close()

    # ---- reload ----------------------------------------------------------------------------------
    def reload(self, target: str | None = None, wait: bool = False) -> bool:
        """Load `target` (default: the one in service, from its newest checkpoint) in the background
        and swap it in. False when a reload is already running (the request is not queued)."""
        if not self._loading.acquire(blocking=False):
            return False
        target = target or self.current.target
        self.state = {"state": "loading", "target": target, "error": None, "finished_at": None}
        t = threading.Thread(target=self._reload, args=(target,), name="sessrec-reload", daemon=True)
        t.start()
        if wait:
            t.join()
        return True

    def _reload(self, target: str) -> None:
        try:
            try:
                rec = self._loader(target)
            except Exception as e:      # keep serving the old model; say why
                self.state = {"state": "failed", "target": target, "error": f"{type(e).__name__}: {e}",
                              "finished_at": _now()}
                if self._on_reload:
                    self._on_reload(False, None)
                return
            new = Served(target, rec)
            with self._lock:
                old, self.current = self.current, new
                old.retired = True
                idle = old.inflight == 0
            if idle:
                old.batcher.close()
            self.state = {"state": "idle", "target": target, "error": None, "finished_at": _now()}
            if self._on_reload:
                self._on_reload(True, rec)
        finally:
            self._loading.release()

    def close(self) -> None:
        self.current.batcher.close()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class ReloadBroadcast:
    """Reload requests shared by the worker processes of one server: a JSON file holding a
    generation number and a target; `request` bumps it, `watch` reloads a slot on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> tuple[int, str | None]:
        try:
            d = json.loads(self.path.read_text())
            return int(d["generation"]), d.get("target")
        except (OSError, ValueError, KeyError):
            return 0, None

    def request(self, target: str | None) -> None:
        gen, _ = self.read()
        write_json(self.path, {"generation": gen + 1, "target": target, "pid": os.getpid()})

    def watch(self, slot: ModelSlot, interval: float = 0.5) -> threading.Thread:
        seen, _ = self.read()

        def loop() -> None:
            nonlocal seen
            while True:
                time.sleep(interval)
                gen, target = self.read()
                if gen != seen and slot.reload(target):
                    seen = gen
        t = threading.Thread(target=loop, name="sessrec-reload-watch", daemon=True)
        t.start()
        return t
