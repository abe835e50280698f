"""Offline evaluation: full-catalogue ranks on the device -> Recall/NDCG/MRR@K, protocols, strata.

Rank of the target: `rank = 1 + (scores > scores[target]).sum(1)` over all V items. Ties count in
the target's favour (an item scored exactly like the target does not push it down), so a scorer that
gives many items the same score looks better than it is: the baselines break ties by popularity for
that reason. Only the padding column is masked; items already in the session are *not* masked,
because repeat views are real next items in e-commerce.

Targets unknown to the training vocabulary (index 0) can never be hit: they get rank = inf, count as
misses in the main metrics and are reported (`unseen_targets`, `metrics_known_targets`). A target
whose score is NaN also gets rank inf (NaN compares false with everything and would otherwise look
like rank 1). The metrics themselves are `engine.core.metrics.metrics_from_ranks`, shared with the demo
oracle; ranks go to the host once per evaluation for them.

Protocols (examples from `make_examples`): "last" predicts each session's last item from the rest
(one example per session); "prefixes" predicts every next item of every session (SR-GNN papers).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from engine.core.metrics import DEFAULT_KS, metrics_from_ranks
from engine.core.progress import ProgressFn, StageReporter
from engine.core.schema import Protocol, values
from engine.data.batches import BatchBuilder
from engine.data.examples import make_examples
from engine.data.sessions import Sessions
from engine.evaluation.ranks import ExampleRanks
from engine.models.base import mask_padding

PROTOCOLS = values(Protocol)
# session length strata: events up to and including the target -> label (lower bound, upper bound)
LENGTH_STRATA: tuple[tuple[str, int, float], ...] = (
    ("2", 2, 2), ("3", 3, 3), ("4", 4, 4), ("5-9", 5, 9), ("10+", 10, math.inf))
COVERAGE_K = 10


def _with_n(ranks: np.ndarray, ks) -> dict[str, Any]:
    return {"n": int(ranks.size), **metrics_from_ranks(ranks, ks)}


def _popularity_vector(popularity: np.ndarray | None, n_items: int, device) -> torch.Tensor | None:
    """Train counts as float64 [V+1] (index 0 = padding = 0); accepts length V or V+1."""
    if popularity is None:
        return None
    pop = np.asarray(popularity, dtype=np.float64)
    if len(pop) == n_items:
        pop = np.concatenate([[0.0], pop])
    if len(pop) != n_items + 1:
        raise ValueError(f"popularity has length {len(pop)}; expected {n_items} or {n_items + 1}")
    return torch.as_tensor(pop, device=device)


def _select(examples: np.ndarray, max_examples: int | None) -> np.ndarray:
    # evenly spaced, deterministic: the first N would over-represent the earliest sessions
    if max_examples is None or len(examples) <= max_examples:
        return examples
    idx = np.unique(np.linspace(0, len(examples) - 1, num=max(1, max_examples)).round().astype(np.int64))
    return examples[idx]


@torch.no_grad()
def evaluate(scorer, builder: BatchBuilder, sessions: Sessions, protocol: str = "last", ks=DEFAULT_KS,
             batch_size: int = 1024, popularity: np.ndarray | None = None,
             progress: ProgressFn | None = None, max_examples: int | None = None,
             return_ranks: bool = False, shard: Any = None) -> dict | tuple[dict, ExampleRanks]:
    """Evaluate `scorer` on `sessions` (the split `builder`'s store was made from). JSON-able result;
    with `return_ranks`, also the per-example ranks and session indices (for confidence intervals
    and paired tests, `engine.evaluation.stats`) as `(result, ExampleRanks)`.

    `popularity`: train counts per item (ItemIndex.train_counts, length V, or V+1) for
    `popularity@10` (mean train count of the items in all top-10 lists) and `popularity_ratio@10`
    (that divided by the mean train count of the known targets: > 1 means the scorer recommends
    more popular items than users actually click next). `coverage@10`: distinct items in all top-10
    lists / V. The scorer's train/eval mode is restored afterwards.

    `shard` (data-parallel workers, `engine.train.distributed.DistContext`): this worker scores its
    contiguous run of whole batches, and the per-example results are gathered in the original order,
    so every worker returns what one process evaluating everything returns.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    t0 = time.perf_counter()
    device = builder.device
    V = builder.n_items
    was_training = getattr(scorer, "training", None)
    if hasattr(scorer, "eval"):
        scorer.eval()
    examples = _select(make_examples(sessions, protocol), max_examples)
    n = len(examples)
    lo, hi = (0, n) if shard is None else shard.split_batches(n, batch_size)
    n_batches = (hi - lo + batch_size - 1) // batch_size
    rep = StageReporter("eval", progress, total=n_batches, unit="batches")
    pop = _popularity_vector(popularity, V, device)

    ranks, repeats, targets_all = [], [], []
    reco_counts = torch.zeros(V + 1, dtype=torch.long, device=device)
    try:
        for start in range(lo, hi, batch_size):
            batch = builder(examples[start:min(hi, start + batch_size)])
            scores = scorer.score(batch)
            if scores.shape != (batch.size, V + 1):
                raise ValueError(f"scorer returned {tuple(scores.shape)}; expected ({batch.size}, {V + 1})")
            scores = mask_padding(scores)
            tgt = batch.targets
            t_score = scores.gather(1, tgt[:, None])
            rank = 1.0 + (scores > t_score).sum(1).double()
            rank = torch.where((tgt == 0) | t_score.squeeze(1).isnan(), math.inf, rank)
            ranks.append(rank)
            targets_all.append(tgt)
            # an unseen target (0) cannot be told apart from other unseen items: "new"
            repeats.append(((batch.items == tgt[:, None]) & batch.mask).any(1) & (tgt > 0))
            top = scores.topk(min(COVERAGE_K, V), dim=1).indices
            reco_counts += torch.bincount(top.reshape(-1), minlength=V + 1)
            rep.step(f"{min(start + batch_size, hi) - lo:,}/{hi - lo:,} examples")
    finally:
        if was_training and hasattr(scorer, "train"):
            scorer.train()

    empty = torch.zeros(0, device=device)
    rank = torch.cat(ranks) if ranks else empty.double()
    tgt = torch.cat(targets_all) if targets_all else empty.long()
    rep_mask = torch.cat(repeats) if repeats else empty.bool()
    if shard is not None:
        rank, tgt, rep_mask = shard.gather_cat(rank), shard.gather_cat(tgt), shard.gather_cat(rep_mask)
        shard.all_reduce_sum(reco_counts)
    known = tgt > 0
    # metrics and strata on the host: ranks and masks cross over once (n values, small)
    rank_h, known_h, rep_h = (t.cpu().numpy() for t in (rank, known, rep_mask))
    ev_len = examples[:, 1] + 1 if n else np.zeros(0, np.int64)

    reco_counts[0] = 0
    coverage = float((reco_counts > 0).sum()) / V if V and n else None
    pop_at, pop_ratio = None, None
    if pop is not None and n:
        pop_at = float((reco_counts.double() * pop).sum() / reco_counts.sum().clamp(min=1))
        target_pop = pop[tgt[known]].mean() if bool(known.any()) else None
        if target_pop is not None and float(target_pop) > 0:
            pop_ratio = pop_at / float(target_pop)

    seconds = time.perf_counter() - t0
    result = {
        "protocol": protocol,
        "n": n,
        "unseen_targets": int((~known).sum()),
        "metrics": metrics_from_ranks(rank_h, ks),
        "metrics_known_targets": _with_n(rank_h[known_h], ks),
        "strata": {
            "length": {label: _with_n(rank_h[(ev_len >= lo) & (ev_len <= hi)], ks)
                       for label, lo, hi in LENGTH_STRATA},
            "repeat": {"repeat": _with_n(rank_h[rep_h], ks), "new": _with_n(rank_h[~rep_h], ks)},
        },
        f"coverage@{COVERAGE_K}": coverage,
        f"popularity@{COVERAGE_K}": pop_at,
        f"popularity_ratio@{COVERAGE_K}": pop_ratio,
        "seconds": round(seconds, 4),
        "examples_per_s": round(n / seconds, 1) if seconds > 0 else None,
    }
    if not return_ranks:
        return result
    return result, ExampleRanks(rank_h.astype(np.float64), examples[:, 0].astype(np.int64),
                                examples[:, 1].astype(np.int64))
