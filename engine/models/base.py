"""The one interface every model shares: score a batch of session prefixes over all items."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from engine.data.batches import Batch


@runtime_checkable
class Scorer(Protocol):
    """Anything the evaluator and the recommender can use.

    `score(batch)` returns float [B, V+1]: a score for every item index, column 0 (padding) = -inf.
    `graph_mode` says which session graphs its batches need ("transitions", "cooc" or "none").
    """

    graph_mode: str

    def score(self, batch: Batch) -> torch.Tensor: ...


def mask_padding(scores: torch.Tensor) -> torch.Tensor:
    """Set the padding column to -inf (in place) and return the scores."""
    scores[:, 0] = float("-inf")
    return scores
