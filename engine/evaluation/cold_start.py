"""The "new items" stratum: targets unseen in training that have item metadata.

The standard evaluation ranks over the training vocabulary (items 1..V), where such a target is
unknown (index 0) and always a miss. Here the catalogue is extended by every item of the dataset's
metadata that training never saw (indices V+1..V+N; `catalogue_extension`), the split is encoded
against it, and:

- a model with item features (`SessionGNN.features`) scores the extended catalogue (the new items
  from their category path and price: `SessionGNN.set_extension`), new items inside a prefix
  included; its ranks of every target are taken there;
- any other model (the baselines, a GNN without features) cannot score a new item: its ranks are
  the standard evaluation's, where those targets are misses.

Reported per stratum (`new_items`: targets > V; `known`: targets 1..V, ranked in the catalogue the
model was scored over) with the same metrics as the evaluator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.core.metrics import DEFAULT_KS, metrics_from_ranks
from engine.data.batches import BatchBuilder, SessionStore
from engine.data.item_meta import ItemMeta
from engine.data.items import ItemIndex
from engine.data.sessions import Sessions
from engine.evaluation.evaluate import evaluate
from engine.evaluation.ranks import ExampleRanks


def catalogue_extension(items: ItemIndex, meta: ItemMeta) -> tuple[ItemIndex, np.ndarray]:
    """(the train vocabulary followed by the metadata's items it lacks, their raw ids): indices 1..V
    are unchanged, V+1..V+N are the new items (train count 0)."""
    new = meta.raw_ids[items.encode(meta.raw_ids) == 0]
    return ItemIndex(np.concatenate([items.raw_ids, new]),
                     np.concatenate([items.train_counts, np.zeros(len(new), np.int64)])), new


def _stratum(ranks: np.ndarray, ks) -> dict[str, Any]:
    return {"n": int(ranks.size), **metrics_from_ranks(ranks, ks)}


@torch.no_grad()
def new_item_strata(scorer: Any, data: Any, split: str, protocol: str, ranks: ExampleRanks, meta: ItemMeta,
                    batch_size: int = 1024, ks=DEFAULT_KS) -> dict[str, Any] | None:
    """The strata of `split`'s examples (those of `ranks`, the standard evaluation's) by target:
    new items with metadata, known items; None when the metadata holds no item unseen in training."""
    ext, new_raw = catalogue_extension(data.items, meta)
    if not len(new_raw):
        return None
    V = data.n_items
    raw = Sessions.read(data.paths.split_sessions(split))
    enc = raw.with_items(ext.encode(raw.items))
    targets = enc.items[enc.offsets[ranks.session] + ranks.prefix]
    new, known = targets > V, (targets > 0) & (targets <= V)
    scored_ext = bool(getattr(scorer, "features", False)) and hasattr(scorer, "set_extension")
    r = ranks.ranks
    if scored_ext:
        scorer.set_extension(*scorer.feature_spec.encode(meta, new_raw))
        try:
            device = next(scorer.parameters()).device
            builder = BatchBuilder(SessionStore(enc, device), ext.n_items, scorer.graph_mode, data.graph)
            _, er = evaluate(scorer, builder, enc, protocol=protocol, batch_size=batch_size, return_ranks=True)
        finally:
            scorer.set_extension(None)
        if not er.same_examples(ranks):
            raise AssertionError("the extended evaluation's examples differ from the standard one's")
        r = er.ranks
    return {"new_items": _stratum(r[new], ks), "known": _stratum(r[known], ks),
            "catalogue": int(ext.n_items), "new_catalogue_items": int(len(new_raw)),
            "scored_new_items": scored_ext}
