"""Warm start: a new run begins from an older run's weights, its item index mapped onto the new one.

`sessrec train --warm-start RUN` trains RUN's model (same architecture and hyperparameters) on the
dataset as it is now, usually after `sessrec data append` added newer events and new items:

- item rows (the item table `emb.weight`): an item the old index knew keeps its vector, found by its
  raw id (`ItemIndex.encode` of the new index's raw ids); an item new to the index gets what
  `new_item_vectors` gives, by default the fresh initialisation the new model was built with;
- the dataset's own buffers (`pe`, the Laplacian positional encodings, the global neighbour table
  `g_nbr` / `g_logw`, and a feature model's item feature ids `feat_cat` / `feat_price`) are the new
  dataset's: they were computed from the new graph and index;
- every other tensor is copied as it is (same shapes: same architecture).

The optimiser and the learning-rate schedule start afresh (the item table changed shape).

**New items with metadata.** `NewItemVectors` gives new items a vector: a function of the new
items' raw ids, the known items' raw ids and their vectors that returns one vector per new item (a
NaN row keeps that item's fresh one), or None to keep them all. `new_item_vectors_for` picks one
when the dataset has item metadata (`sessrec data items`):

- a model trained with item features (`item_features`): its own part is the older model's learned
  new-item vector (`new_item_vector`), so a new item starts as the older model scored it as a cold
  item (new-item vector + its category and price embeddings); the feature model keeps the older
  run's `FeatureSpec` (its checkpoint's), so that category rows mean the same categories;
- a model without features: the mean vector of the known items of its deepest category that has
  known items (`category_mean`); an item whose categories have none starts fresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from engine.core.errors import InputError
from engine.core.lookup import find_sorted
from engine.data.item_meta import FeatureSpec, ItemMeta
from engine.data.items import UNKNOWN, ItemIndex

ITEM_ROWS = ("emb.weight",)                       # indexed by item (row 0 = padding)
# computed from the dataset: the new one's are kept
DATASET_BUFFERS = ("pe", "g_nbr", "g_logw", "feat_cat", "feat_price")

# (raw ids of the new items, raw ids of the known items, the known items' vectors [n, d]) -> [m, d]
# (a NaN row: keep that item's fresh initialisation)
NewItemVectors = Callable[[np.ndarray, np.ndarray, torch.Tensor], "torch.Tensor | None"]


@dataclass
class WarmSource:
    """The older run a warm start begins from: its weights, item index and (a feature model) the
    FeatureSpec it encoded items with."""

    run_id: str
    state: dict[str, torch.Tensor]
    items: ItemIndex
    feature_spec: FeatureSpec | None = None


def new_item_vector(old_state: dict[str, torch.Tensor]) -> NewItemVectors:
    """Every new item's own embedding is the older feature model's learned new-item vector."""
    vec = old_state["new_emb"]

    def new_item_vector(new_raw: np.ndarray, known_raw: np.ndarray, known: torch.Tensor) -> torch.Tensor:
        return vec.to(known.device, known.dtype).expand(len(new_raw), -1).clone()
    return new_item_vector


def category_means(meta: ItemMeta) -> NewItemVectors:
    """A new item's vector is the mean of the known items' vectors in its deepest category that has
    known items (its leaf, else its parent, ...); NaN (fresh) where none of its categories has one."""
    def category_mean(new_raw: np.ndarray, known_raw: np.ndarray, known: torch.Tensor) -> torch.Tensor:
        p_new, p_known = meta.paths_of(new_raw), meta.paths_of(known_raw)          # root first, -1 pad
        out = torch.full((len(new_raw), known.shape[1]), float("nan"), dtype=known.dtype, device=known.device)
        todo = np.ones(len(new_raw), bool)
        for level in reversed(range(p_new.shape[1])):                             # deepest level first
            has = p_known[:, level] >= 0
            if not has.any() or not todo.any():
                continue
            cats, group = np.unique(p_known[has, level], return_inverse=True)
            g = torch.as_tensor(group, device=known.device)
            sums = torch.zeros(len(cats), known.shape[1], dtype=known.dtype, device=known.device)
            sums.index_add_(0, g, known[torch.as_tensor(np.flatnonzero(has), device=known.device)])
            counts = torch.bincount(g, minlength=len(cats)).to(known.dtype)
            c = p_new[:, level]
            pos = find_sorted(cats, c)
            hit = todo & (c >= 0) & (pos >= 0)
            rows = torch.as_tensor(np.flatnonzero(hit), device=known.device)
            gp = torch.as_tensor(pos[hit], device=known.device)
            out[rows] = sums[gp] / counts[gp, None]
            todo &= ~hit
        return out
    return category_mean


def new_item_vectors_for(model: torch.nn.Module, old_state: dict[str, torch.Tensor],
                         meta: ItemMeta | None) -> NewItemVectors | None:
    """What new items start from (see the module docstring): None without item metadata."""
    if meta is None:
        return None
    if getattr(model, "features", False) and "new_emb" in old_state:
        return new_item_vector(old_state)
    return category_means(meta)


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
                    vec = vec.to(value.device, value.dtype)
                    ok = ~torch.isnan(vec).any(1)
                    at = torch.as_tensor(new_rows, device=value.device)
                    table[at[ok]] = vec[ok]
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
