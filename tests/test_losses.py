"""Losses against hand-made cases and textbook identities."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from engine.train.losses import bpr_loss, compute_loss, full_softmax_ce, log_expected_counts, sampled_softmax_ce

V, D = 7, 4


class FakeModel:
    """Fixed session and item vectors: enough of the SessionGNN interface for compute_loss."""

    n_items = V

    def __init__(self, reps: torch.Tensor, table: torch.Tensor) -> None:
        self.reps, self.table = reps, table

    def __call__(self, batch) -> torch.Tensor:
        return self.reps

    def item_vectors(self, items=None) -> torch.Tensor:
        return self.table if items is None else self.table[items]

    def item_table(self) -> torch.Tensor:
        return self.table


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    reps, table = torch.randn(3, D, generator=g), torch.randn(V + 1, D, generator=g)
    return reps, table, torch.tensor([2, 5, 7])


def full_ce(reps, table, targets):
    return F.cross_entropy((reps @ table.T)[:, 1:], targets - 1)   # padding column left out


def test_full_ce_matches_torch_with_padding_masked(case):
    reps, table, t = case
    logits = reps @ table.T
    logits[:, 0] = 1e4                                 # would dominate if not masked
    assert torch.allclose(full_softmax_ce(logits, t), full_ce(reps, table, t), atol=1e-6)
    assert torch.allclose(full_softmax_ce(logits[:, 1:], t, padded=False), full_ce(reps, table, t),
                          atol=1e-6)
    assert torch.allclose(compute_loss(FakeModel(reps, table), SimpleNamespace(targets=t), "ce"),
                          full_ce(reps, table, t), atol=1e-6)


def test_full_ce_ignores_unknown_targets(case):
    reps, table, t = case
    t0 = torch.tensor([2, 0, 7])
    keep = t0 > 0
    assert torch.allclose(full_softmax_ce(reps @ table.T, t0), full_ce(reps[keep], table, t[keep]))
    assert full_softmax_ce(reps @ table.T, torch.zeros(3, dtype=torch.long)) == 0   # no NaN


def test_sampled_softmax_reduces_to_full_ce_when_all_items_are_candidates(case):
    reps, table, t = case
    others = torch.tensor([i for i in range(1, V + 1) if i not in t.tolist()])
    cand = torch.cat([t, others])
    log_q = torch.full((len(cand),), math.log(3.0))   # uniform Q: a constant shift, cancels
    got = sampled_softmax_ce(reps, table[cand], cand, t, log_q)
    assert torch.allclose(got, full_ce(reps, table, t), atol=1e-6)


def test_sampled_softmax_masks_accidental_hits(case):
    reps, table, _ = case
    # repeated target in the batch and every item again among the uniform negatives: the row's
    # own positive is kept, its other copies are masked, so each row sees every item once
    t = torch.tensor([3, 3, 6])
    for i in range(3):
        cand = torch.cat([t[i:i + 1], torch.arange(1, V + 1)])
        got = sampled_softmax_ce(reps[i:i + 1], table[cand], cand, t[i:i + 1], torch.zeros(len(cand)))
        assert torch.allclose(got, full_ce(reps[i:i + 1], table, t[i:i + 1]), atol=1e-6)
    t = torch.tensor([3, 3])                            # in-batch copy of the own target: masked
    cand = torch.cat([t, torch.tensor([1, 2, 4, 5, 6, 7])])
    got = sampled_softmax_ce(reps[:2], table[cand], cand, t, torch.zeros(len(cand)))
    assert torch.allclose(got, full_ce(reps[:2], table, t), atol=1e-6)


def test_logq_duplicates_recover_full_softmax_mass(case):
    """A negative that appears m times with log Q = log m carries the same mass as once with 0."""
    reps, table, _ = case
    t = torch.tensor([1])
    negs = torch.tensor([2, 2, 2, 3, 4, 4, 5, 6, 7])
    cand = torch.cat([t, negs])
    mult = (cand[:, None] == cand[None, :]).sum(1).float()
    got = sampled_softmax_ce(reps[:1], table[cand], cand, t, torch.log(mult))
    assert torch.allclose(got, full_ce(reps[:1], table, t), atol=1e-5)


def test_log_expected_counts():
    targets = torch.tensor([2, 2, 5, 1])
    items = torch.tensor([2, 5, 3])
    n, B = 3, 4
    got = log_expected_counts(items, targets, n, V)
    assert torch.allclose(got, torch.log(torch.tensor([2.0, 1.0, 0.0]) + n / V))
    freq = torch.tensor([0, 1, 4, 2, 1, 1, 0, 1])          # sums to 10
    got = log_expected_counts(items, targets, n, V, freq)
    assert torch.allclose(got, torch.log(B * torch.tensor([0.4, 0.1, 0.2]) + n / V))


def test_sampled_compute_loss_is_finite_and_ignores_unknown(case):
    reps, table, _ = case
    torch.manual_seed(0)
    out = compute_loss(FakeModel(reps, table), SimpleNamespace(targets=torch.tensor([2, 0, 7])),
                       "sampled", negatives=4, item_freq=torch.ones(V + 1))
    assert torch.isfinite(out) and out > 0


def test_bpr_hand_made():
    pos = torch.tensor([2.0, 0.5])
    neg = torch.tensor([[1.0, 3.0], [0.5, -1.0]])
    valid = torch.tensor([[True, True], [False, True]])
    want = -(torch.log(torch.sigmoid(torch.tensor(1.0))) + torch.log(torch.sigmoid(torch.tensor(-1.0)))
             + torch.log(torch.sigmoid(torch.tensor(1.5)))) / 3
    assert torch.allclose(bpr_loss(pos, neg, valid), want)


def test_bpr_compute_loss_matches_manual(case):
    reps, table, t = case
    k = 5
    torch.manual_seed(7)
    got = compute_loss(FakeModel(reps, table), SimpleNamespace(targets=t), "bpr", negatives=k)
    torch.manual_seed(7)
    neg = torch.randint(1, V + 1, (3, k))
    diff = (reps * table[t]).sum(-1)[:, None] - torch.einsum("bd,bkd->bk", reps, table[neg])
    valid = neg != t[:, None]                           # accidental hits do not count
    want = -F.logsigmoid(diff)[valid].mean()
    assert torch.allclose(got, want, atol=1e-6)


def test_unknown_loss_is_an_error(case):
    reps, table, t = case
    with pytest.raises(ValueError, match="unknown loss"):
        compute_loss(FakeModel(reps, table), SimpleNamespace(targets=t), "hinge")
