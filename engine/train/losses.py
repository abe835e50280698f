"""Training losses over a model's session vectors and item vectors.

- "ce": full-softmax cross-entropy over all V items (padding column left out). Exact; costs a
  [B, V+1] matmul, which is fine up to a few hundred thousand items on a GPU.
- "sampled": softmax over the batch's targets (in-batch negatives) + `negatives` uniform items shared
  by the batch, with logQ correction: each candidate's logit is reduced by log of its expected count
  in the candidate set, E[c] = B * p(c) + n / V, where p(c) is its target frequency (from `item_freq`,
  or the batch's own counts when None). Accidental hits (a candidate equal to the row's target, other
  than the row's own positive) are masked.
- "bpr": -log sigmoid(s_pos - s_neg) over `negatives` uniform items per example (the reference's loss);
  accidental hits are masked.

Rows with target 0 (unknown item) contribute nothing; the loop drops them, this is a guard.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.core.schema import Loss, values

LOSSES = values(Loss)


def _masked_mean(per_row: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    valid = valid.to(per_row.dtype)
    return (per_row * valid).sum() / valid.sum().clamp(min=1)       # no NaN when no row is valid


def full_softmax_ce(logits: torch.Tensor, targets: torch.Tensor, padded: bool = True) -> torch.Tensor:
    """Mean CE over all items; rows with target 0 are ignored.

    logits: [B, V+1] with the padding column first (`padded`; it is left out, whatever it holds) or
    [B, V] over items 1..V. compute_loss uses the latter: reps @ table[1:].T needs no masking, while
    writing -inf into a column of a tensor that needs grad costs a full [B, V+1] copy in backward.
    """
    if padded:
        logits = logits[:, 1:]
    per_row = F.cross_entropy(logits.float(), targets - 1, ignore_index=-1, reduction="none")
    return _masked_mean(per_row, targets > 0)


def sampled_softmax_ce(reps: torch.Tensor, cand_vecs: torch.Tensor, cand_items: torch.Tensor,
                       targets: torch.Tensor, log_q: torch.Tensor,
                       extra: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax CE over candidates whose first B are the batch's targets (row i's positive is column i).

    reps [B, d], cand_vecs [C, d], cand_items long [C], targets long [B], log_q [C] (log expected count).
    """
    B = targets.shape[0]
    logits = (reps @ cand_vecs.T).float() - log_q.float()                   # [B, C]
    if extra is not None:                                                   # model's extra logits [B, C]
        logits = logits + extra
    rows = torch.arange(B, device=logits.device)
    own = torch.arange(logits.shape[1], device=logits.device)[None, :] == rows[:, None]
    hit = (cand_items[None, :] == targets[:, None]) & ~own                  # accidental hits
    logits = logits.masked_fill(hit | (cand_items == 0)[None, :], float("-inf"))
    labels = torch.where(targets > 0, rows, -100)
    per_row = F.cross_entropy(logits, labels, reduction="none")             # 0 at ignored rows
    return _masked_mean(per_row, targets > 0)


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(pos - neg) over the valid (example, negative) pairs.

    pos [B], neg [B, k], valid bool [B, k].
    """
    per_pair = -F.logsigmoid(pos.float()[:, None] - neg.float())
    return _masked_mean(per_pair, valid)


def log_expected_counts(items: torch.Tensor, targets: torch.Tensor, n_uniform: int, n_items: int,
                        item_freq: torch.Tensor | None = None) -> torch.Tensor:
    """log E[count of each of `items` in the candidate set] = log(B p(item) + n_uniform / V)."""
    if item_freq is not None:
        p = item_freq.to(torch.float32)
        in_batch = targets.shape[0] * p[items] / p.sum()
    else:
        # index_add, not bincount: bincount reads max(targets) back to the host on CUDA
        ones = torch.ones_like(targets, dtype=torch.float32)
        in_batch = torch.zeros(n_items + 1, device=targets.device).index_add_(0, targets, ones)[items]
    return torch.log(in_batch + n_uniform / n_items)


def _reps_and_items(model, batch, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(model, "forward_with_items"):
        return model.forward_with_items(batch, items)
    return model(batch), model.item_vectors(items)


def compute_loss(model, batch, loss: str = "ce", negatives: int = 256,
                 item_freq: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss of `model` (a SessionGNN-like module) on `batch`.

    model must provide forward(batch) -> [B, d], item_table(), item_vectors(items) and n_items
    (forward_with_items(batch, items) is used when present: one embedding lookup).
    item_freq: float/long [V+1] train target counts on the batch's device (sampled softmax only).
    Uniform negatives are drawn from 1..V with torch's global RNG (seeded by the loop).
    """
    main, reps = _next_item_loss(model, batch, loss, negatives, item_freq)
    weight = float(getattr(model, "contrastive", 0.0) or 0.0)
    if weight > 0:
        # a second pass draws other dropout masks and PE signs: two views of each session
        main = main + weight * info_nce(reps, model(batch), float(model.cl_temp), batch.targets > 0)
    return main


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, valid: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between two views of the batch's sessions (row i of `a` and of `b` are
    the positive pair, the other rows the negatives), on unit vectors with `temperature`."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature                                          # [B, B]
    labels = torch.arange(a.shape[0], device=a.device)
    per_row = 0.5 * (F.cross_entropy(logits, labels, reduction="none")
                     + F.cross_entropy(logits.T, labels, reduction="none"))
    return _masked_mean(per_row, valid)


def _next_item_loss(model, batch, loss: str, negatives: int,
                    item_freq: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the next-item loss, the session vectors it was computed from)."""
    targets = batch.targets
    extra = getattr(model, "repeat_logits", None)      # repeat-aware models add session-item logits
    if loss in ("ce", "auto"):   # "auto" is resolved when a run is prepared; unresolved it is ce
        reps = model(batch)
        logits = (reps @ model.item_table()[1:].T).float()                  # [B, V] (no padding)
        if hasattr(model, "add_repeat_logits"):
            logits = model.add_repeat_logits(batch, reps, logits, first_item=1)
        return full_softmax_ce(logits, targets, padded=False), reps
    V, B = model.n_items, targets.shape[0]
    if loss == "sampled":
        neg = torch.randint(1, V + 1, (negatives,), device=targets.device)
        cand = torch.cat([targets, neg])                                    # [B + n]
        reps, cand_vecs = _reps_and_items(model, batch, cand)               # [B, d], [B + n, d]
        log_q = log_expected_counts(cand, targets, negatives, V, item_freq)
        rep = extra(batch, reps, cand) if extra else None
        return sampled_softmax_ce(reps, cand_vecs, cand, targets, log_q, rep), reps
    if loss == "bpr":
        neg = torch.randint(1, V + 1, (B, negatives), device=targets.device)   # [B, k]
        cand = torch.cat([targets[:, None], neg], 1)                        # [B, 1 + k]
        reps, vecs = _reps_and_items(model, batch, cand)
        scores = torch.einsum("bd,bkd->bk", reps, vecs)                     # [B, 1 + k]
        rep = extra(batch, reps, cand) if extra else None
        if rep is not None:
            scores = scores.float() + rep
        valid = (neg != targets[:, None]) & (targets > 0)[:, None]
        return bpr_loss(scores[:, 0], scores[:, 1:], valid), reps
    raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
