"""Vectorised batches with per-session graphs, built on the device from examples.

An example is a pair (session, prefix_len) from `engine.data.examples.make_examples` (re-exported
here): the first `prefix_len` items of the session are the input, item number `prefix_len` is the
target; prefixes are never materialised. A batch gathers its prefixes from the flat session tensor
into a padded [B, L] tensor in one indexing operation, and builds the session graphs of the whole
batch at once:

    key = b * (V + 1) + item;  nodes, alias = torch.unique(key, return_inverse=True)

gives each (session, item) pair one node, the batch vector (key // (V+1)) and the node of every
position (alias). Edges are either the click transitions inside the session (both directions,
counted) or, like the reference implementation, the global co-occurrence graph induced on the
session's items. Everything is tensor ops; there is no Python loop over sessions or edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch

from engine.core.schema import GraphMode, values
from engine.data.examples import make_examples  # noqa: F401  (re-exported: callers import it from here)
from engine.data.graph import CoocGraph
from engine.data.sessions import Sessions

GRAPH_MODES = values(GraphMode)


@dataclass
class Batch:
    items: torch.Tensor        # long [B, L]  prefix items, left-aligned, 0 = padding
    lengths: torch.Tensor      # long [B]     number of items in each prefix (may be 0)
    targets: torch.Tensor      # long [B]     next item, 0 = unknown to the model (counted as a miss)
    mask: torch.Tensor         # bool [B, L]
    # session graphs of the whole batch (PyG layout)
    x: torch.Tensor            # long [N]     item of each node
    edge_index: torch.Tensor   # long [2, M]
    edge_weight: torch.Tensor  # float [M]
    batch: torch.Tensor        # long [N]     session of each node
    alias: torch.Tensor        # long [B, L]  node of each position (0 at padding: use `mask`)
    last_node: torch.Tensor    # long [B]     node of the last prefix item (0 when the prefix is empty)
    # long [B] ms: time of each prefix's last event (time-aware scorers, e.g. STAN); None for
    # typed prefixes, which have no event times (those scorers then take "now" = after training)
    now: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.items.shape[0])

    @property
    def last_items(self) -> torch.Tensor:
        idx = (self.lengths - 1).clamp(min=0)
        return self.items.gather(1, idx[:, None]).squeeze(1) * (self.lengths > 0)


class SessionStore:
    """A split's sessions as flat tensors on the training device."""

    def __init__(self, sessions: Sessions, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.items = torch.as_tensor(sessions.items.astype(np.int64), device=self.device)
        self.offsets = torch.as_tensor(sessions.offsets, device=self.device)
        self.timestamps = torch.as_tensor(sessions.timestamps.astype(np.int64), device=self.device)
        self.n_sessions = len(sessions)


class BatchBuilder:
    """Turns example index pairs into `Batch`es on the store's device."""

    def __init__(self, store: SessionStore, n_items: int, graph_mode: str = GraphMode.TRANSITIONS,
                 cooc: CoocGraph | None = None) -> None:
        if graph_mode not in GRAPH_MODES:
            raise ValueError(f"graph_mode {graph_mode!r}; expected one of {', '.join(GRAPH_MODES)}")
        if graph_mode == "cooc" and cooc is None:
            raise ValueError("graph_mode 'cooc' needs the co-occurrence graph")
        self.store = store
        self.n_items = n_items
        self.graph_mode = graph_mode
        self.device = store.device
        if graph_mode == "cooc":
            coo = cooc.edge_index()
            keep = coo[0] != coo[1]                     # self-loops: the convs add their own
            src = torch.as_tensor(coo[0][keep], device=self.device)
            dst = torch.as_tensor(coo[1][keep], device=self.device)
            w = torch.as_tensor(np.log1p(cooc.weight[keep]).astype(np.float32), device=self.device)
            key = src * (n_items + 1) + dst
            order = torch.argsort(key)
            self._cooc_key, self._cooc_w = key[order], w[order]

    def __call__(self, examples: torch.Tensor | np.ndarray) -> Batch:
        ex = torch.as_tensor(examples, device=self.device)
        sid, plen = ex[:, 0], ex[:, 1]
        B = int(ex.shape[0])
        L = max(1, int(plen.max())) if B else 1
        start = self.store.offsets[sid]
        pos = torch.arange(L, device=self.device)
        valid = pos[None, :] < plen[:, None]
        flat = (start[:, None] + pos[None, :]).clamp(max=max(0, self.store.items.numel() - 1))
        items = torch.where(valid, self.store.items[flat], 0)
        targets = self.store.items[start + plen]
        # unknown items (0) inside a prefix are dropped: stable-sort them to the right
        known = items > 0
        if not bool(known.eq(valid).all()):
            order = torch.sort((~known).to(torch.int8), dim=1, stable=True).indices
            items = items.gather(1, order)
            known = items > 0
        lengths = known.sum(1)
        now = self.store.timestamps[(start + plen - 1).clamp(min=0)] if B else plen
        return self._with_graph(items, lengths, targets, known, now)

    def from_prefixes(self, prefixes: list[list[int]]) -> Batch:
        """A batch from explicit item-index lists (recommendation requests). Target is 0.

        Padded on the host with numpy (one request is a handful of items: per-op overhead is the
        whole cost, and a numpy op costs a fraction of a torch op's dispatch)."""
        lengths = np.fromiter(map(len, prefixes), np.int64, len(prefixes))
        L = max(1, int(lengths.max(initial=0)))
        valid = np.arange(L) < lengths[:, None]
        arr = np.zeros((len(prefixes), L), dtype=np.int64)
        arr[valid] = np.fromiter(chain.from_iterable(prefixes), np.int64, int(lengths.sum()))
        known = arr > 0
        if not np.array_equal(known, valid):     # unknown items (0) are dropped: moved to the right
            arr = np.take_along_axis(arr, np.argsort(~known, axis=1, kind="stable"), 1)
            known = arr > 0
        items = torch.from_numpy(arr).to(self.device)
        mask = torch.from_numpy(known).to(self.device)
        return self._with_graph(items, torch.from_numpy(known.sum(1)).to(self.device),
                                torch.zeros(len(prefixes), dtype=torch.long, device=self.device), mask)

    # ---- graphs ------------------------------------------------------------------------------
    def _with_graph(self, items: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                    mask: torch.Tensor, now: torch.Tensor | None = None) -> Batch:
        L = max(1, int(lengths.max())) if lengths.numel() else 1
        if L < items.shape[1]:       # unknown items were dropped: trim the padding
            items, mask = items[:, :L].contiguous(), mask[:, :L].contiguous()
        B = items.shape[0]
        V1 = self.n_items + 1
        b_idx = torch.arange(B, device=self.device)[:, None].expand(B, L)
        key = b_idx * V1 + items
        nodes, inverse = torch.unique(key[mask], return_inverse=True)
        alias = torch.zeros(B, L, dtype=torch.long, device=self.device)
        alias[mask] = inverse
        x = nodes % V1
        batch = nodes // V1
        last_node = alias.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        if self.graph_mode == GraphMode.TRANSITIONS:
            ei, ew = self._transition_edges(alias, mask, len(x))
        elif self.graph_mode == "cooc":
            ei, ew = self._cooc_edges(x, batch, B)
        else:
            ei = torch.zeros(2, 0, dtype=torch.long, device=self.device)
            ew = torch.zeros(0, device=self.device)
        return Batch(items, lengths, targets, mask, x, ei, ew, batch, alias, last_node, now)

    def _transition_edges(self, alias: torch.Tensor, mask: torch.Tensor, n: int):
        pair = mask[:, 1:]          # prefixes are left-aligned: cell j + 1 is an item only when cell j is
        src, dst = alias[:, :-1][pair], alias[:, 1:][pair]
        # both directions, duplicates summed into weights, sorted by (source, target): what PyG's
        # coalesce gives, in one sorted unique over the pair keys (about a third of its cost for
        # one session, where per-op overhead is the whole cost of serving a request's graph)
        key, w = torch.unique(torch.cat([src * n + dst, dst * n + src]), return_counts=True)
        return torch.stack([key // max(n, 1), key % max(n, 1)]), w.float()

    def _cooc_edges(self, x: torch.Tensor, batch: torch.Tensor, B: int):
        # all ordered node pairs inside each session graph, kept where the global graph has the edge
        counts = torch.bincount(batch, minlength=B)
        first = torch.cumsum(counts, 0) - counts            # first node of each graph
        per_node = counts[batch]                            # partners of each node
        src = torch.repeat_interleave(torch.arange(len(x), device=self.device), per_node)
        rank = torch.arange(len(src), device=self.device) - torch.repeat_interleave(
            torch.cumsum(per_node, 0) - per_node, per_node)
        dst = first[batch[src]] + rank
        keep = src != dst
        src, dst = src[keep], dst[keep]
        key = x[src] * (self.n_items + 1) + x[dst]
        pos = torch.searchsorted(self._cooc_key, key).clamp(max=max(0, len(self._cooc_key) - 1))
        hit = self._cooc_key[pos] == key if len(self._cooc_key) else torch.zeros_like(key, dtype=torch.bool)
        return torch.stack([src[hit], dst[hit]]), self._cooc_w[pos[hit]]
