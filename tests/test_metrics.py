"""Ranking metrics (engine.core.metrics): hand-checked values of the one definition."""

import math

import numpy as np
import pytest

from engine.core.metrics import metrics_from_ranks


def test_metrics_from_ranks_by_hand():
    m = metrics_from_ranks(np.array([1, 3, math.inf, 12]))
    assert list(m) == ["recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "mrr@20"]
    assert m["recall@10"] == 0.5
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / 2) / 4)            # 1/log2(2), 1/log2(4)
    assert m["recall@20"] == 0.75
    assert m["mrr@20"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 4)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / 2 + 1 / math.log2(13)) / 4)


def test_metrics_boundary_other_ks_and_empty():
    m = metrics_from_ranks([5.0, 6.0], ks=(5,))
    assert m == pytest.approx({"recall@5": 0.5, "ndcg@5": 0.5 / math.log2(6), "mrr@5": 0.1})
    empty = metrics_from_ranks(np.zeros(0))
    assert list(empty) == ["recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "mrr@20"]
    assert all(v is None for v in empty.values())


def test_per_example_metrics_are_what_the_means_average():
    from engine.core.metrics import per_example_metrics
    per = per_example_metrics(np.array([1, 3, math.inf, 12]), ks=(10,))
    assert per["recall@10"].tolist() == [1, 1, 0, 0]
    assert per["mrr@10"] == pytest.approx([1, 1 / 3, 0, 0])
    assert per["ndcg@10"] == pytest.approx([1, 0.5, 0, 0])
