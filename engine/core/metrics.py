"""Ranking metrics from target ranks: the one definition the evaluator and the demo oracle share.

A rank is the 1-based position of the target in a scorer's list (float; inf = miss, e.g. a target
unknown to the model or outside an oracle's top-k). Per cutoff K: Recall@K = [rank <= K],
NDCG@K = 1/log2(rank + 1) (one relevant item, so the ideal DCG is 1), MRR@K = 1/rank, each 0 beyond
K, averaged over examples. numpy only: the data pipeline uses it and must not import torch.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

DEFAULT_KS = (10, 20)          # the cutoffs every evaluation reports
KINDS = ("recall", "ndcg", "mrr")



def metric_names(ks: Iterable[int] = DEFAULT_KS) -> list[str]:
    """The keys of `metrics_from_ranks(ranks, ks)`, in its order (e.g. `mrr@20`)."""
    return [f"{kind}@{k}" for k in ks for kind in KINDS]


def per_example_metrics(ranks: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Recall@K, NDCG@K and MRR@K of every example (float64 arrays shaped like `ranks`), keys in
    order recall@K, ndcg@K, mrr@K per K. Their means are `metrics_from_ranks`; the bootstrap
    (`engine.evaluation.stats`) resamples them."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = ranks <= k
        r = np.where(hit, ranks, 1.0)  # misses: avoid log2(inf) and 1/inf, zeroed below anyway
        out[f"recall@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
        out[f"mrr@{k}"] = np.where(hit, 1.0 / r, 0.0)
    return out


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float | None]:
    """Recall@K, NDCG@K and MRR@K averaged over `ranks` (float, inf = miss). Keys in order
    recall@K, ndcg@K, mrr@K per K; values are None when `ranks` is empty."""
    return {name: float(v.mean()) if v.size else None for name, v in per_example_metrics(ranks, ks).items()}
