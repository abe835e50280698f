"""The evaluator against ranks and metrics computed by hand."""

import json
import math

import numpy as np
import pytest
import torch

from engine.data.batches import BatchBuilder, SessionStore
from engine.data.sessions import Sessions
from engine.evaluation.evaluate import evaluate, metrics_from_ranks

V = 30


def make(lists):
    return Sessions.from_lists(lists, np.int32)


class FixedScorer(torch.nn.Module):
    """Returns the rows of a given [N, V+1] tensor, batch after batch; records what it was asked."""

    graph_mode = "none"

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores, self.cursor, self.seen = scores, 0, []

    def score(self, batch):
        self.seen += [(batch.items[i, :int(batch.lengths[i])].tolist(), int(batch.targets[i]))
                      for i in range(batch.size)]
        out = self.scores[self.cursor:self.cursor + batch.size].clone()
        self.cursor += batch.size
        return out


# five sessions, lengths 2, 3, 4, 5, 10 (one per length stratum); the last target is unseen (0)
SESSIONS = [[1, 2], [3, 5, 5], [1, 2, 3, 7], [1, 2, 3, 4, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]]
TARGETS = [2, 5, 7, 8, 0]
EXPECTED_RANKS = [1, 3, 10, 11, math.inf]


def hand_scores() -> torch.Tensor:
    """Background -i/100 (all below the targets, distinct); the target 5; then per row:
    0: nothing above -> rank 1
    1: items 3 (a session item: not masked) and 9 above, 10, 11, 12 tied with it -> rank 3
    2: 9 items above -> rank 10 (the K=10 boundary: a hit)
    3: 10 items above -> rank 11 (a miss at 10, a hit at 20)
    4: unseen target -> miss whatever the scores
    The padding column gets the highest score of all: the evaluator must mask it."""
    s = -torch.arange(V + 1, dtype=torch.float32)[None, :].repeat(5, 1) / 100
    s[range(5), TARGETS] = 5.0
    s[1, [3, 9]] = 7.0
    s[1, [10, 11, 12]] = 5.0
    s[2, 11:20] = 6.0
    s[3, 11:21] = 6.0
    s[:, 0] = 100.0
    return s


def run(scores, sessions=SESSIONS, **kw):
    s = make(sessions)
    builder = BatchBuilder(SessionStore(s), V, "none")
    scorer = FixedScorer(scores)
    return evaluate(scorer, builder, s, **kw), scorer


def test_metrics_from_ranks_by_hand():
    m = metrics_from_ranks(torch.tensor([1.0, 3.0, 10.0, 11.0, math.inf]))
    assert m["recall@10"] == pytest.approx(3 / 5)
    assert m["recall@20"] == pytest.approx(4 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 5)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11) + 1 / math.log2(12)) / 5)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 5)
    assert m["mrr@20"] == pytest.approx((1 + 1 / 3 + 1 / 10 + 1 / 11) / 5)
    assert list(m) == ["recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "mrr@20"]
    assert all(v is None for v in metrics_from_ranks(torch.zeros(0)).values())


def test_hand_ranks_ties_boundary_unseen_and_strata():
    counts = np.arange(V, 0, -1)           # train count of item i = V + 1 - i
    res, scorer = run(hand_scores(), popularity=counts)
    json.dumps(res)                         # JSON-able
    assert res["protocol"] == "last" and res["n"] == 5 and res["unseen_targets"] == 1
    assert res["metrics"] == pytest.approx(metrics_from_ranks(torch.tensor(EXPECTED_RANKS)))
    assert res["metrics"]["recall@10"] == pytest.approx(3 / 5)
    known = res["metrics_known_targets"]
    assert known["n"] == 4 and known["recall@10"] == pytest.approx(3 / 4)
    assert known["mrr@20"] == pytest.approx((1 + 1 / 3 + 1 / 10 + 1 / 11) / 4)
    # one example per length stratum, in session order
    for label, r in zip(["2", "3", "4", "5-9", "10+"], EXPECTED_RANKS):
        st = res["strata"]["length"][label]
        assert st["n"] == 1
        assert st["recall@10"] == (1.0 if r <= 10 else 0.0)
    # only session 1 (target 5 after [3, 5]) repeats a prefix item; the unseen target is "new"
    rep = res["strata"]["repeat"]
    assert rep["repeat"]["n"] == 1 and rep["repeat"]["mrr@10"] == pytest.approx(1 / 3)
    assert rep["new"]["n"] == 4
    # coverage@10 from the top-10 lists, computed the slow way
    s = hand_scores()
    s[:, 0] = -math.inf
    tops = [sorted(range(V + 1), key=lambda i: (-float(s[r, i]), i))[:10] for r in range(5)]
    distinct = set().union(*map(set, tops))
    assert res["coverage@10"] == pytest.approx(len(distinct) / V)
    pop = np.concatenate([[0], counts])
    mean_reco = np.mean([pop[i] for t in tops for i in t])
    assert res["popularity@10"] == pytest.approx(mean_reco)
    assert res["popularity_ratio@10"] == pytest.approx(mean_reco / np.mean(pop[[2, 5, 7, 8]]))
    assert res["seconds"] >= 0 and res["examples_per_s"] > 0


def test_batching_does_not_change_results():
    full, _ = run(hand_scores())
    small, _ = run(hand_scores(), batch_size=2)
    for key in ("metrics", "metrics_known_targets", "strata", "coverage@10"):
        assert small[key] == full[key]


def test_return_ranks_keeps_each_examples_rank_session_and_prefix(tmp_path):
    (res, ranks), _ = run(hand_scores(), return_ranks=True, batch_size=2)
    assert res["metrics"] == pytest.approx(metrics_from_ranks(torch.tensor(EXPECTED_RANKS)))
    assert ranks.ranks.tolist() == EXPECTED_RANKS
    assert ranks.session.tolist() == [0, 1, 2, 3, 4]
    assert ranks.prefix.tolist() == [1, 2, 3, 4, 9]         # "last": every session but its last item
    from engine.evaluation.ranks import ExampleRanks
    ranks.save(tmp_path / "r.npz")
    back = ExampleRanks.load(tmp_path / "r.npz")
    assert back.ranks.tolist() == EXPECTED_RANKS and back.session.tolist() == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["r.npz"]   # written in place, no temp left


def test_protocols_on_a_hand_example():
    sessions = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    for protocol, pairs in [
        ("last", [([1, 2], 3), ([4], 5), ([6, 7, 8], 9)]),
        ("prefixes", [([1], 2), ([1, 2], 3), ([4], 5), ([6], 7), ([6, 7], 8), ([6, 7, 8], 9)]),
    ]:
        # one-hot on each example's target: every rank is 1
        scores = torch.zeros(len(pairs), V + 1)
        scores[range(len(pairs)), [t for _, t in pairs]] = 1.0
        res, scorer = run(scores, sessions, protocol=protocol, batch_size=4)
        assert scorer.seen == pairs
        assert res["n"] == len(pairs) and res["metrics"]["mrr@10"] == 1.0
    with pytest.raises(ValueError):
        run(scores, sessions, protocol="all")


def test_max_examples_progress_and_train_mode():
    calls = []
    scores = torch.rand(5, V + 1)
    s = make(SESSIONS)
    scorer = FixedScorer(scores)
    scorer.train()
    res = evaluate(scorer, BatchBuilder(SessionStore(s), V, "none"), s, max_examples=3,
                   batch_size=2, progress=calls.append)
    assert res["n"] == 3 and len(scorer.seen) == 3
    assert scorer.seen[0][1] == 2 and scorer.seen[-1][1] == 0   # evenly spaced: first and last
    assert [c.stage for c in calls] == ["eval", "eval"] and calls[-1].done == calls[-1].total == 2
    assert scorer.training                                        # mode restored


def test_nan_target_score_is_a_miss():
    scores = hand_scores()
    scores[0, 2] = math.nan
    res, _ = run(scores)
    assert res["strata"]["length"]["2"]["recall@20"] == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_same_result_on_cuda():
    s = make(SESSIONS)
    cpu = evaluate(FixedScorer(hand_scores()), BatchBuilder(SessionStore(s), V, "none"), s)
    gpu = evaluate(FixedScorer(hand_scores().cuda()), BatchBuilder(SessionStore(s, "cuda"), V, "none"), s)
    # equal up to the order of floating-point sums on the device
    assert flat(gpu) == pytest.approx(flat(cpu), rel=1e-12, abs=1e-15)


def flat(res: dict, prefix: str = "") -> dict:
    """Numeric leaves of a result, keyed by path (timings left out)."""
    out = {}
    for key, value in res.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and key not in ("seconds", "examples_per_s"):
            out[prefix + key] = value
    return out
