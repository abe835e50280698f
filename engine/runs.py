"""Read runs back from disk: status, best validation and test metrics, learning curves.

Everything comes from `runs/<id>/config.json` and `events.jsonl`, so a run started by another
process (or before an SSH drop) reads the same as one the caller started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.process import pid_alive
from engine.train.events import EVENTS_FILE, read_events
from engine.workspace import Workspace

TERMINAL = ("run_finished", "run_failed")


@dataclass
class RunSummary:
    run_id: str
    dir: Path
    model: str
    dataset: str
    kind: str                      # gnn | baseline
    status: str                    # running | completed | early_stopped | stopped | failed | interrupted
    created: str
    device: str | None = None
    epochs_run: int = 0
    epochs: int | None = None
    best_epoch: int | None = None
    best_val: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)      # {"last": metrics, "prefixes": metrics}
    seconds: float | None = None
    error: str | None = None
    pid: int | None = None
    has_best: bool = False
    has_last: bool = False

    def metric(self, where: str, name: str = "recall@10") -> float | None:
        """`where`: val | test_last | test_prefixes."""
        if where == "val":
            return self.best_val.get(name)
        proto = where.split("_", 1)[1]
        return (self.test.get(proto) or {}).get(name)


def new_run_id(model: str, existing: "Iterable[str]", stamp: str | None = None) -> str:
    """`<model>-<mmdd-HHMMSS>` (with -2, -3, ... when taken). The dataset is in the run's config."""
    import time
    stamp = stamp or time.strftime("%m%d-%H%M%S")
    base = f"{model}-{stamp}"[:60]
    taken = set(existing)
    rid, n = base, 1
    while rid in taken:
        n += 1
        rid = f"{base}-{n}"
    return rid


def summarize_run(run_dir: Path) -> RunSummary:
    cfg = json.loads((run_dir / "config.json").read_text())
    train = cfg.get("train", {})
    events = read_events(run_dir / EVENTS_FILE)
    s = RunSummary(run_id=cfg.get("run_id", run_dir.name), dir=run_dir, model=train.get("model", "?"),
                   dataset=train.get("dataset", "?"), kind=cfg.get("kind", "gnn"), status="interrupted",
                   created=cfg.get("created", ""), epochs=train.get("epochs"),
                   has_best=(run_dir / "best.pt").exists(), has_last=(run_dir / "last.pt").exists())
    last_type = None
    for ev in events:
        t = ev.get("type")
        if t == "run_started":
            s.device, s.pid = ev.get("device"), ev.get("pid")
            s.status, s.error = "running", None
        elif t == "epoch":
            s.epochs_run = ev.get("epoch", s.epochs_run)
            s.best_epoch = ev.get("best_epoch")
            if ev.get("improved"):
                s.best_val = (ev.get("val") or {}).get("metrics", {})
        elif t == "run_finished":
            s.status = ev.get("status", "completed")
            s.seconds = ev.get("seconds")
            if ev.get("best_val"):
                s.best_val = ev["best_val"]
            if ev.get("test"):
                s.test = {p: r.get("metrics", {}) for p, r in ev["test"].items()}
        elif t == "run_failed":
            s.status = "failed" if ev.get("error_kind") != "interrupted" else "interrupted"
            s.error = ev.get("error")
        last_type = t
    if last_type not in TERMINAL and s.status == "running" and not pid_alive(s.pid):
        s.status = "interrupted"     # killed without a chance to write run_finished (OOM killer, kill -9)
    return s


def list_runs(ws: Workspace) -> list[RunSummary]:
    out = []
    for rid in ws.run_ids():
        try:
            out.append(summarize_run(ws.run(rid).root))
        except (OSError, json.JSONDecodeError, KeyError):
            continue   # a half-created run folder: not a run
    return out


def curves(events: list[dict[str, Any]]) -> dict[str, list]:
    """Learning curves from events: loss per step, val metrics per epoch, best epoch."""
    out: dict[str, list] = {"step": [], "loss": [], "epoch": [], "val_recall@10": [], "val_ndcg@10": [],
                            "best_epoch": []}
    for ev in events:
        if ev.get("type") == "step" and ev.get("loss") is not None:
            out["step"].append(ev["step"])
            out["loss"].append(ev["loss"])
        elif ev.get("type") == "epoch":
            m = (ev.get("val") or {}).get("metrics", {})
            out["epoch"].append(ev["epoch"])
            out["val_recall@10"].append(m.get("recall@10"))
            out["val_ndcg@10"].append(m.get("ndcg@10"))
            out["best_epoch"].append(ev.get("best_epoch"))
    return out
