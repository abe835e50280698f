"""Warm start: a new run begins from an older run's weights, its item index mapped onto the new one.

`sessrec train --warm-start RUN` trains RUN's model (same architecture and hyperparameters) on the
dataset as it is now, usually after `sessrec data append` added newer events and new items:

- item rows (the item table `emb.weight`): an item the old index knew keeps its vector, found by its
  raw id (`ItemIndex.encode` of the new index's raw ids); an item new to the index gets what
  `new_item_vectors` gives, by default the fresh initialisation the new model was built with;
- the dataset's own buffers (`pe`, the Laplacian positional encodings, and the global neighbour
  table `g_nbr` / `g_logw`) are the new dataset's: they were computed from the new graph;
- every other tensor is copied as it is (same shapes: same architecture).

The optimiser and the learning-rate schedule start afresh (the item table changed shape).

**Extension point for cold-start items.** `NewItemVectors` is where feature-based vectors for new
items plug in: a function of the new items' raw ids, the known items' raw ids and their vectors that
returns one vector per new item, or None to keep the fresh ones. Item metadata is being added to the
data layer on the `shop-data` branch; until it lands, `fit` passes none and new items start fresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from engine.core.errors import InputError
from engine.data.items import UNKNOWN, ItemIndex

ITEM_ROWS = ("emb.weight",)                       # indexed by item (row 0 = padding)
DATASET_BUFFERS = ("pe", "g_nbr", "g_logw")       # computed from the dataset: the new one's are kept

# (raw ids of the new items, raw ids of the known items, the known items' vectors [n, d]) -> [m, d]
NewItemVectors = Callable[[np.ndarray, np.ndarray, torch.Tensor], "torch.Tensor | None"]


@dataclass
class WarmStart:
    """What a warm start took from the older run (recorded in the run's start event)."""

    from_run: str
    known_items: int               # items of the new index found in the old one
    new_items: int                 # items the old index did not know
    dropped_items: int             # items of the old index that are gone
    copied: int                    # tensors copied as they were
    new_item_init: str = "fresh"   # or the name of the NewItemVectors used

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def warm_start(model: torch.nn.Module, old_state: dict[str, torch.Tensor], old_items: ItemIndex,
               new_items: ItemIndex, from_run: str, new_item_vectors: NewItemVectors | None = None) -> WarmStart:
    """Load `old_state` into `model` (built for `new_items`) as described above; InputError when the
    two are not the same architecture."""
    state = model.state_dict()
    missing = sorted(set(state) - set(old_state) - set(DATASET_BUFFERS))
    extra = sorted(set(old_state) - set(state) - set(DATASET_BUFFERS))
    if missing or extra:
        raise InputError(f"--warm-start {from_run}: its model has other parameters ({', '.join((missing + extra)[:4])}"
                         f"{'...' if len(missing + extra) > 4 else ''}); warm start needs the same architecture")
    old_of_new = old_items.encode(new_items.raw_ids)          # [V_new], 0 = unknown to the old index
    known = old_of_new != UNKNOWN
    new_rows = np.flatnonzero(~known) + 1                      # row indices in the new table
    out, copied = {}, 0
    for key, value in state.items():
        if key in DATASET_BUFFERS:
            out[key] = value
            continue
        old = old_state[key].to(value.device, value.dtype)
        if key in ITEM_ROWS:
            table = value.clone()
            rows = torch.as_tensor(np.flatnonzero(known) + 1, device=value.device)
            table[rows] = old[torch.as_tensor(old_of_new[known], device=value.device)]
            if new_item_vectors is not None and len(new_rows):
                vec = new_item_vectors(new_items.raw_ids[~known], new_items.raw_ids[known], table[rows])
                if vec is not None:
                    table[torch.as_tensor(new_rows, device=value.device)] = vec.to(value.device, value.dtype)
            out[key] = table
        elif old.shape != value.shape:
            raise InputError(f"--warm-start {from_run}: {key} is {tuple(old.shape)} there and {tuple(value.shape)} "
                             f"here; warm start needs the same architecture and hyperparameters")
        else:
            out[key] = old
            copied += 1
    model.load_state_dict(out)
    return WarmStart(from_run, int(known.sum()), int((~known).sum()),
                     int(old_items.n_items - known.sum()), copied,
                     getattr(new_item_vectors, "__name__", "fresh") if new_item_vectors is not None else "fresh")
