"""The arms of an A/B server: one `ModelSlot` per arm (each with its own hot reload), the experiment
that routes a session id to its arm (`engine.serve.experiment`), and the impression and feedback
logs (`engine.serve.eventlog`). The app asks `route` which slot answers a session and hands every
served list to `impression`; nothing here waits on the disk."""

from __future__ import annotations

import time
from typing import Callable

from engine.core.errors import InputError
from engine.core.workspace import Workspace
from engine.serve.eventlog import EventLog
from engine.serve.experiment import Arm, Experiment
from engine.serve.slot import ModelSlot


class ArmSet:
    def __init__(self, ws: Workspace, experiment_name: str, arms: list[Arm],
                 slots: dict[str, ModelSlot]) -> None:
        self.slots = slots
        runs = {a.name: slots[a.name].current.rec.meta.get("run_id") for a in arms}
        self.experiment = Experiment(ws.experiment(experiment_name), arms, runs)
        self.impressions = EventLog(self.experiment.folder, "impressions")
        self.feedback_log = EventLog(self.experiment.folder, "feedback")
        self._n = 0
        self._prefix = f"{int(time.time() * 1000):x}"
        self.on_reload: Callable[[str, bool, object], None] | None = None
        for name, slot in slots.items():
            slot._on_reload = self._reloaded_hook(name)

    @property
    def names(self) -> list[str]:
        return list(self.slots)

    def route(self, session_id: str) -> tuple[int, str, ModelSlot]:
        phase, arm = self.experiment.route(session_id)
        return phase, arm, self.slots[arm]

    def impression(self, phase: int, arm: str, session_id: str, target: str, items: list[int], k: int,
                   n_items: int, t: float) -> str:
        """Queue one served list; returns its impression id."""
        self._n += 1
        iid = f"{self._prefix}-{self._n}"
        self.impressions.put({"id": iid, "t": round(t, 6), "phase": phase, "session": session_id, "arm": arm,
                              "target": target, "items": items, "k": k, "n": n_items})
        return iid

    def feedback(self, session_id: str, item: int, event: str) -> tuple[int, str]:
        phase, arm = self.experiment.route(session_id)
        self.feedback_log.put({"t": round(time.time(), 6), "phase": phase, "session": session_id, "arm": arm,
                               "item": item, "event": event})
        return phase, arm

    # ---- changes ---------------------------------------------------------------------------------
    def reload(self, arm: str | None, target: str | None) -> bool:
        """Reload one arm (its run's newest checkpoint, or another target); the experiment starts a
        new phase when the new model is in. False when that arm is already reloading."""
        return self.slot(arm).reload(target)

    def slot(self, arm: str | None) -> ModelSlot:
        if arm not in self.slots:
            raise InputError(f"arm: expected one of {', '.join(self.slots)}" + ("" if arm is None else f", got {arm!r}"))
        return self.slots[arm]

    def _reloaded_hook(self, name: str) -> Callable[[bool, object], None]:
        def hook(ok: bool, rec) -> None:
            if ok and rec is not None:
                self.experiment.swapped(name, self.slots[name].current.target, rec.meta.get("run_id"))
            if self.on_reload is not None:
                self.on_reload(name, ok, rec)
        return hook

    def info(self) -> dict:
        out = self.experiment.info()
        for a in out["arms"]:
            slot = self.slots[a["name"]]
            a["model"] = slot.current.rec.meta.get("model", "")
            a["reload"] = slot.state
        out["logged"] = {"impressions": self.impressions.written, "feedback": self.feedback_log.written,
                         "lost": self.impressions.lost + self.feedback_log.lost}
        return out

    def close(self) -> None:
        for s in self.slots.values():
            s.close()
        self.impressions.close()
        self.feedback_log.close()
