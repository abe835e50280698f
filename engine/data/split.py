"""Temporal split by session start time, with a blackout gap before each cut point.

ratio mode: cut points t1, t2 are the start times of the sessions at the `train_ratio` and
`train_ratio + val_ratio` quantiles (sessions sorted by start). Then

    train: start < t1 - gap          blackout: t1 - gap <= start < t1   (dropped, counted)
    val:   t1 <= start < t2 - gap    blackout: t2 - gap <= start < t2   (dropped, counted)
    test:  t2 <= start

so test is exactly the latest share of sessions and the gap is taken from the split before it.
days mode: t2 = (latest start) - test_days; t1 is the `1 - val_ratio` quantile of the sessions
before t2; same blackout rule.
test_file mode: the test sessions come from a separate file (a published split) and are used as
they are; validation is the latest `val_ratio` of the train file by start time (start >= t1), and
train ends a blackout gap before it.
The gap keeps sessions that straddle a cut (and near-duplicates across it) out of evaluation.
`refit`: the cuts are computed as above, then every session before the test cut is train and
validation is empty (a refit dataset: the same test, more training sessions).
"""

from __future__ import annotations

import numpy as np

from engine.core.config import DataConfig
from engine.core.errors import StageError
from engine.data.sessions import Sessions, session_stats

DAY_MS = 86_400_000


def _cut_at_quantile(starts_sorted: np.ndarray, q: float) -> int:
    idx = min(len(starts_sorted) - 1, int(np.floor(q * len(starts_sorted))))
    return int(starts_sorted[idx])


def split_sessions(sessions: Sessions, cfg: DataConfig,
                   test_sessions: Sessions | None = None) -> tuple[dict[str, Sessions], dict]:
    """Return ({"train", "val", "test"}: Sessions, stats). Sessions keep their start-time order."""
    if len(sessions) == 0:
        raise StageError("split: no sessions to split")
    gap = int(round(cfg.blackout_days * DAY_MS))
    start = sessions.start
    s_sorted = np.sort(start)
    if cfg.split_mode == "test_file":
        if test_sessions is None:
            raise StageError("split: split_mode=test_file but no test sessions were given")
        t1 = _cut_at_quantile(s_sorted, 1.0 - cfg.val_ratio) if cfg.val_ratio > 0 else int(s_sorted[-1]) + 1 + gap
        t2 = None
    elif cfg.split_mode == "days":
        t2 = int(s_sorted[-1]) - int(round(cfg.test_days * DAY_MS))
        before = s_sorted[s_sorted < t2]
        if len(before) == 0:
            raise StageError(f"split: every session starts within the last {cfg.test_days} days")
        t1 = _cut_at_quantile(before, 1.0 - cfg.val_ratio) if cfg.val_ratio > 0 else t2
    else:
        t1 = _cut_at_quantile(s_sorted, cfg.train_ratio)
        t2 = _cut_at_quantile(s_sorted, cfg.train_ratio + cfg.val_ratio)

    train_m = start < t1 - gap
    if t2 is None:
        val_m = start >= t1
        test_m = np.zeros_like(train_m)
    else:
        val_m = (start >= t1) & (start < t2 - gap)
        test_m = start >= t2
    if cfg.refit:
        # the papers' protocol: every session before the test cut trains (validation and the gap
        # between train and validation too); test stays exactly the same sessions
        train_m = ~test_m if t2 is None else start < t2 - gap
        val_m = np.zeros_like(train_m)
    dropped = ~(train_m | val_m | test_m)
    black1 = dropped & (start < t1)
    black2 = dropped & ~black1
    parts = {"train": sessions.take(train_m), "val": sessions.take(val_m),
             "test": test_sessions if t2 is None else sessions.take(test_m)}

    stats: dict = {
        "mode": cfg.split_mode,
        "cut_train_val": t1,
        "cut_val_test": t2,
        "blackout_ms": gap,
        "blackout_dropped": int(black1.sum() + black2.sum()),
        "blackout_dropped_train_val": int(black1.sum()),
        "blackout_dropped_val_test": int(black2.sum()),
    }
    total = sum(len(p) for p in parts.values())
    for name, part in parts.items():
        st = session_stats(part)
        st["share"] = round(len(part) / max(1, total), 4)
        stats[name] = st
    required = ("train", "val", "test") if cfg.val_ratio > 0 and not cfg.refit else ("train", "test")
    for name in required:
        if len(parts[name]) == 0:
            raise StageError(f"split: the {name} split is empty (sessions {len(sessions)}, "
                             f"blackout {cfg.blackout_days} days); use more data, a shorter "
                             f"blackout (--blackout-days) or other ratios")
    return parts, stats
