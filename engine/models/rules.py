"""Sequential rules (SR; Kamehkhosh et al. 2017, as in session-rec's `baselines/sr.py`).

A rule a -> b gets weight(d) from every train session where b follows a at distance
0 < d <= `steps` (session-rec: `steps`, default 10; repeats and a -> a included). `weighting` is
session-rec's name for the function of d: "div" 1/d (its default), "quadratic" 1/d^2, "log"
1/log10(d + 1.7), "same" 1, "linear" 1 - d/10 (clamped at 0 here; session-rec lets it go negative
for d > 10). Each antecedent keeps its `pruning` heaviest rules (session-rec: `pruning`, default
20; ties here go to the lower item index; 0 = all; session-rec's fractional pruning < 1 is not
offered). The score of a prefix is its last item's rules, scaled to max 1 like session-rec, plus
the popularity tie-break of every baseline. session-rec's extensions (`last_n_days`, `idf_weight`,
`last_in_session`) are off by default there and not implemented.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.core.config import SRConfig
from engine.data.batches import Batch
from engine.data.graph import top_per_row
from engine.data.sessions import Sessions, row_ids
from engine.models.baselines import _Baseline, _csr_expand, _score_weight


def rule_table(train: Sessions, n_items: int, steps: int, weighting: str,
               pruning: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rules as CSR over antecedents (indptr [V+2], consequents, weights), heaviest first."""
    items = train.items.astype(np.int64)
    ends = train.offsets[1:][row_ids(train.offsets)]       # end of each event's session
    at = np.arange(len(items))
    dist_w = _score_weight(weighting, torch.arange(1, steps + 1)).numpy()
    a, c, w = [], [], []
    for d in range(1, steps + 1):      # one vectorised pass per distance, not per session
        p = at[at + d < ends]
        ok = (items[p] > 0) & (items[p + d] > 0)
        a.append(items[p[ok]])
        c.append(items[p[ok] + d])
        w.append(np.full(int(ok.sum()), dist_w[d - 1]))
    a, c, w = (np.concatenate(x) if x else np.zeros(0) for x in (a, c, w))
    # sum the weights of equal (a, c) pairs
    key, inv = np.unique(a.astype(np.int64) * (n_items + 1) + c.astype(np.int64), return_inverse=True)
    total = np.bincount(inv.ravel(), weights=w, minlength=len(key))
    rows, cols = np.divmod(key, n_items + 1)
    return top_per_row(rows, cols, total, n_items + 1, pruning)


class SequentialRules(_Baseline):
    """Score of b after a prefix ending in a = weight of the rule a -> b (see the module doc)."""

    def __init__(self, train: Sessions, n_items: int, steps: int = 10, weighting: str = "div",
                 pruning: int = 20) -> None:
        items = train.items.astype(np.int64)
        super().__init__(np.bincount(items[items > 0], minlength=n_items + 1)[1:])
        _score_weight(weighting, torch.ones(1))          # validate the name early
        self.steps, self.weighting, self.pruning = steps, weighting, pruning
        indptr, cons, weight = rule_table(train, n_items, steps, weighting, pruning)
        self.register_buffer("indptr", torch.as_tensor(indptr), persistent=False)
        self.register_buffer("cons", torch.as_tensor(cons), persistent=False)
        self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float64), persistent=False)

    def score(self, batch: Batch) -> torch.Tensor:
        B, V1 = batch.size, self.n_items + 1
        src, at = _csr_expand(self.indptr, batch.last_items)   # an empty prefix: item 0, no rules
        primary = torch.zeros(B * V1, dtype=torch.float64, device=self.weight.device)
        primary.index_add_(0, src * V1 + self.cons[at], self.weight[at])
        return self._finish(primary.view(B, V1))


def build_sr(cfg: SRConfig, data) -> SequentialRules:
    return SequentialRules(data.train, data.n_items, steps=cfg.steps, weighting=cfg.weighting,
                           pruning=cfg.pruning)
