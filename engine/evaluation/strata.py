"""Where a model wins: test targets that repeat an item of their session against new targets.

A target is a *repeat* when its raw item id already occurs in the prefix the model saw (the raw
test split, so a dataset and its refit twin, whose vocabularies differ, stratify every example the
same way); the others are *new*. S-POP (re-rank the session's own items) is the reference on
repeats, V-STAN on new targets: a model worth its cost beats both on their own ground.
numpy only: read from saved per-example ranks, no model is loaded.
"""

from __future__ import annotations

import numpy as np

from engine.core.metrics import per_example_metrics
from engine.core.workspace import Workspace
from engine.data.sessions import Sessions
from engine.evaluation.ranks import ExampleRanks

STRATA = ("repeat", "new")
STRATUM_METRICS = ("recall@20", "mrr@20")


def repeat_mask(sessions: Sessions, session: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """bool [N]: example i's target (item `prefix[i]` of session `session[i]`) occurs among the
    first `prefix[i]` items of its session. One vectorised pass over every prefix position."""
    off = sessions.offsets[session]
    target = sessions.items[off + prefix]
    n = len(prefix)
    ex = np.repeat(np.arange(n), prefix)                              # example of each prefix cell
    first = np.cumsum(prefix) - prefix                                 # its first cell
    pos = np.arange(int(prefix.sum())) - np.repeat(first, prefix)      # position inside the prefix
    hit = sessions.items[np.repeat(off, prefix) + pos] == target[ex]
    return np.bincount(ex[hit], minlength=n) > 0


def test_repeat_mask(ws: Workspace, dataset: str, ranks: ExampleRanks) -> np.ndarray | None:
    """`repeat_mask` of a run's test examples, from its dataset's raw test split; None when that
    split cannot be read (the dataset was deleted) or does not hold these examples (rebuilt)."""
    path = ws.dataset(dataset).split_sessions("test")
    if not path.is_file():
        return None
    sessions = Sessions.read(path)
    if len(ranks) and (ranks.session.max() >= len(sessions)
                       or np.any(ranks.prefix >= sessions.lengths[ranks.session])):
        return None
    return repeat_mask(sessions, ranks.session, ranks.prefix)


def stratum_values(values: dict[str, np.ndarray], repeat: np.ndarray) -> dict[str, dict]:
    """Per stratum: n and the mean of each of STRATUM_METRICS over its examples (None when empty),
    from per-example metric values (`per_example_metrics`, or their mean over seeds)."""
    out = {}
    for name, m in (("repeat", repeat), ("new", ~repeat)):
        n = int(m.sum())
        out[name] = {"n": n, **{k: (float(values[k][m].mean()) if n else None) for k in STRATUM_METRICS}}
    return out


def strata(ranks: ExampleRanks, repeat: np.ndarray) -> dict[str, dict]:
    """`stratum_values` of one run's ranks."""
    return stratum_values(per_example_metrics(ranks.ranks, ks=(20,)), repeat)
