"""Early stopping on a validation metric (higher is better), saved in checkpoints for exact resume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class EarlyStopping:
    patience: int
    best_value: float = -1.0
    best_epoch: int = 0               # 1-based; 0 = no epoch validated yet
    bad_epochs: int = 0
    best_metrics: dict = field(default_factory=dict)

    def update(self, epoch: int, value: float, metrics: dict) -> bool:
        """Record epoch `epoch`'s validation `value`; True when it is the best so far."""
        if value > self.best_value + 1e-12:
            self.best_value, self.best_epoch, self.bad_epochs, self.best_metrics = value, epoch, 0, dict(metrics)
            return True
        self.bad_epochs += 1
        return False

    def keep_last(self, epoch: int, value: float | None, metrics: dict) -> bool:
        """Without early stopping every epoch is the one kept (its metrics recorded if any)."""
        self.best_value = -1.0 if value is None else value
        self.best_epoch, self.bad_epochs, self.best_metrics = epoch, 0, dict(metrics)
        return True

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    @property
    def patience_left(self) -> int:
        return self.patience - self.bad_epochs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], patience: int) -> "EarlyStopping":
        return cls(patience, float(d.get("best_value", -1.0)), int(d.get("best_epoch") or 0),
                   int(d.get("bad_epochs", 0)), dict(d.get("best_metrics") or {}))
