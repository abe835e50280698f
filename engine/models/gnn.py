"""Session GNNs (GraphSAGE, GAT, Graph Transformer) that score every item for a session prefix.

    h0    = emb[x] (+ Linear(sign * pe[x]))       node inputs            [N, d]
    h     = ConvBlock^layers(h0, edges)           message passing        [N, d]
    s     = readout(h[alias], mask, h[last])      session vector         [B, d]
    score = s @ emb.T (+ repeat(session items))   one logit per item     [B, V+1], column 0 = -inf

The optional repeat scorer adds gate(s) * log1p(sum of learned recency weights of the positions
holding an item) to the items already in the session (e-commerce sessions re-view items often).

With item features (a dataset with item metadata, `item_features`), an item's vector is its own
embedding plus the sum of the embeddings of its category path's levels and of its price bucket
(`FeatureSpec`, fitted on the training items). Training replaces a share (`cold_dropout`) of the
items' own embeddings by one learned new-item vector, so the feature part learns to stand alone; an
item added after training (index V+1.. of an extension, `set_extension`) is that new-item vector
plus its features, so it can be scored and recommended without retraining.

With `normalize` (NISER) s and the item table are L2-normalised and s is multiplied by `scale`, which
curbs the popularity bias of dot-product scores. Laplacian PE columns have arbitrary signs, so in
training each session graph sees each PE column with a random sign (the model learns to be invariant);
in eval mode no signs are flipped. The item table for scoring is the embedding alone (no PE).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.core.config import GNNConfig
from engine.core.errors import InputError
from engine.core.schema import GraphMode
from engine.data.batches import GRAPH_MODES, Batch
from engine.data.item_meta import ItemFeatures
from engine.models.base import mask_padding
from engine.models.layers import CONVS, ConvBlock
from engine.models.readout import READOUTS, Readout

REPEAT_BUCKETS = 8   # recency buckets of the repeat scorer: last position, 1 before, ..., 7+ before


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x / ||x|| over the last dim (a zero row stays 0). Multiplying by the reciprocal norm has a
    cheaper backward than F.normalize's full-size division, which shows on the [V+1, d] table."""
    return x * torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-6).reciprocal()


class SessionGNN(nn.Module):
    # no defaults here: the model configs (engine.core.config) hold them, once; `build_gnn` passes all
    def __init__(self, n_items: int, *, hidden: int, conv: str, layers: int, heads: int, ffn_mult: int,
                 readout: str, pe: np.ndarray | torch.Tensor | None, use_pe: bool, dropout: float,
                 normalize: bool, scale: float, graph_mode: str, repeat: bool, pos_emb: bool,
                 neighbors: tuple[np.ndarray, np.ndarray] | None, switch: bool = False,
                 contrastive: float = 0.0, cl_temp: float = 0.2, highway: bool = False,
                 features: ItemFeatures | None = None, cold_dropout: float = 0.0) -> None:
        super().__init__()
        if use_pe and pe is None:
            raise InputError("use_pe is on but the dataset has no Laplacian PE; build the encodings "
                             "stage or set use_pe=false")
        if graph_mode not in GRAPH_MODES:
            raise InputError(f"graph_mode {graph_mode!r}; expected one of {', '.join(GRAPH_MODES)}")
        if conv not in CONVS or readout not in READOUTS:
            raise InputError(f"conv {conv!r} / readout {readout!r}; expected conv in {CONVS}, "
                             f"readout in {READOUTS}")
        if conv != "sage" and hidden % heads:
            raise InputError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        if hidden < 1 or layers < 0 or scale <= 0 or not 0 <= dropout < 1:
            raise InputError("need hidden >= 1, layers >= 0, scale > 0 and 0 <= dropout < 1")
        self.n_items, self.hidden = n_items, hidden
        self.graph_mode = graph_mode
        self.normalize, self.scale = normalize, float(scale)
        self.emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.emb.weight, std=hidden ** -0.5)
        with torch.no_grad():
            self.emb.weight[0].zero_()
        self.use_pe = use_pe
        if use_pe:
            pe_t = torch.as_tensor(np.asarray(pe, dtype=np.float32))
            if pe_t.ndim != 2 or pe_t.shape[0] != n_items + 1:
                raise InputError(f"PE has shape {tuple(pe_t.shape)}; expected [{n_items + 1}, k]")
            # persistent: a checkpoint scores exactly as trained even if the dataset's PE is rebuilt
            self.register_buffer("pe", pe_t)
            self.pe_proj = nn.Linear(pe_t.shape[1], hidden, bias=False)
        self.global_graph = neighbors is not None
        if self.global_graph:
            nbr, w = neighbors
            if nbr.shape[0] != n_items + 1 or nbr.shape != w.shape:
                raise InputError(f"neighbour table has shape {nbr.shape}; expected [{n_items + 1}, k]")
            # persistent: the checkpoint scores exactly as trained even if the graph is rebuilt
            self.register_buffer("g_nbr", torch.as_tensor(nbr, dtype=torch.long))
            with np.errstate(divide="ignore"):
                self.register_buffer("g_logw", torch.as_tensor(np.log(w).astype(np.float32)))  # -inf: none
            self.g_proj = nn.Linear(hidden, hidden)
        self.feature_spec = features.spec if features is not None else None
        self.cold_dropout = float(cold_dropout)
        self._extension: tuple[torch.Tensor, torch.Tensor] | None = None
        self._ext_version = 0
        if features is not None:
            cat, price = (torch.as_tensor(a, dtype=torch.long) for a in (features.category, features.price))
            if cat.shape != (n_items + 1, features.spec.depth) or price.shape != (n_items + 1,):
                raise InputError(f"item features have shapes {tuple(cat.shape)} / {tuple(price.shape)}; expected "
                                 f"[{n_items + 1}, {features.spec.depth}] / [{n_items + 1}]")
            # persistent: a checkpoint scores exactly as trained even if the metadata changes later
            self.register_buffer("feat_cat", cat)
            self.register_buffer("feat_price", price)
            self.cat_emb = nn.Embedding(features.spec.n_categories + 1, hidden, padding_idx=0)
            self.price_emb = nn.Embedding(max(1, features.spec.n_price_buckets) + 1, hidden, padding_idx=0)
            for e in (self.cat_emb, self.price_emb):
                nn.init.normal_(e.weight, std=hidden ** -0.5)
                with torch.no_grad():
                    e.weight[0].zero_()
            self.new_emb = nn.Parameter(torch.randn(hidden) * hidden ** -0.5)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(ConvBlock(conv, hidden, heads, dropout, ffn_mult) for _ in range(layers))
        self.readout = Readout(readout, hidden, positions=pos_emb)
        self.repeat = repeat
        if repeat:
            # repeat-aware scoring: e-commerce sessions re-view items (a third of the demo's and
            # RetailRocket's targets repeat a session item), which a dot product with one session
            # vector ranks poorly; a learned recency weight per position plus a session-dependent
            # gate adds a score to the items already in the session (RepeatNet-like, one scatter)
            self.recency_w = nn.Parameter(torch.zeros(REPEAT_BUCKETS))
            self.repeat_gate = nn.Linear(hidden, 1)
        self.switch = switch
        if switch:
            # repeat-or-explore (RepeatNet): a session item scores z(s) + log softmax over the
            # session's items of (dot + repeat logit), so z, learned from the session vector, decides
            # how far the session's items stand above the explored ones (see `switch_cells`)
            self.switch_gate = nn.Linear(hidden, 1)
            with torch.no_grad():
                self.switch_gate.bias.fill_(float(scale) if normalize else 0.0)
        self.contrastive, self.cl_temp = float(contrastive), float(cl_temp)
        # SGNN-HN's highway gate: each node mixes its input and its message-passing output, so deep
        # stacks do not wash out the item's own embedding (over-smoothing)
        self.highway = nn.Linear(2 * hidden, hidden) if highway else None

    # ---- item vectors: own embedding (+ features) ------------------------------------------------
    @property
    def features(self) -> bool:
        return self.feature_spec is not None

    @property
    def n_table(self) -> int:
        """Rows of the scoring table: padding, the V trained items, and the extension's new items."""
        return len(self._extension[1]) if self._extension is not None else self.n_items + 1

    def set_extension(self, category: np.ndarray | None, price: np.ndarray | None = None) -> None:
        """Items added after training, as indices V+1..V+N: their feature ids (`FeatureSpec.encode`:
        category indices [N, depth], price buckets [N]); None removes them. Only a model with item
        features can score them."""
        self._table_cache = None
        self._ext_version += 1
        if category is None or not len(category):
            self._extension = None
            return
        if not self.features:
            raise InputError("only a model trained with item features (item_features on a dataset with "
                             "item metadata) can score items unseen in training")
        dev = self.emb.weight.device
        self._extension = (torch.cat([self.feat_cat, torch.as_tensor(category, dtype=torch.long, device=dev)]),
                           torch.cat([self.feat_price, torch.as_tensor(price, dtype=torch.long, device=dev)]))

    def feature_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        """Sum of the category-path and price-bucket embeddings of items `idx` ([..., d])."""
        cat, price = self._extension if self._extension is not None else (self.feat_cat, self.feat_price)
        return self.cat_emb(cat[idx]).sum(-2) + self.price_emb(price[idx])

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Input vectors of items `idx` ([..., d]): the item's own embedding, plus its features when
        the model has them; an extension item's own part is the new-item vector, and so is that of
        `cold_dropout` of the trained items in training (never of padding)."""
        if not self.features:
            return self.emb(idx)
        own = idx <= self.n_items
        e = self.emb(idx.clamp(max=self.n_items))
        if self.training and self.cold_dropout > 0:
            own = own & ((torch.rand(idx.shape, device=idx.device) >= self.cold_dropout) | (idx == 0))
        e = torch.where(own.unsqueeze(-1), e, self.new_emb.to(e.dtype))
        return e + self.feature_vectors(idx).to(e.dtype)

    # ---- nodes -> sessions ----------------------------------------------------------------------
    def node_inputs(self, batch: Batch, h: torch.Tensor | None = None) -> torch.Tensor:
        """The items' vectors (+ PE projection, random column signs in training), dropped out: [N, d].
        Extension items (index > V) have no PE and no neighbours in the train graph."""
        h = self.embed(batch.x) if h is None else h                             # [N, d]
        x = batch.x if self._extension is None else batch.x * (batch.x <= self.n_items)
        if self.global_graph:
            h = h + self.g_proj(self.global_context(x, h))
        if self.use_pe:
            pe = self.pe[x]                                                     # [N, k]
            if self.training:
                # one random sign per (session graph, PE column); no host sync
                n_graphs = batch.items.shape[0]
                sign = torch.randint(0, 2, (n_graphs, pe.shape[1]), device=pe.device) * 2 - 1
                pe = pe * sign[batch.batch].to(pe.dtype)
            h = h + self.pe_proj(pe)
        return self.drop(h)

    def global_context(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Attention of each node's item over its most similar items in the train graph: [N, d].

        score_j = <e_x, e_j> / sqrt(d) + log sim(x, j); an item without neighbours gets 0.
        """
        nbr, logw = self.g_nbr[x], self.g_logw[x]                                # [N, k]
        e_nb = self.embed(nbr)                                                   # [N, k, d]
        att = (e_nb @ e.unsqueeze(-1)).squeeze(-1) * self.hidden ** -0.5 + logw  # [N, k]
        has = torch.isfinite(logw).any(-1, keepdim=True)                         # [N, 1]
        a = torch.softmax(att.masked_fill(~has, 0.0), -1) * has                  # no NaN rows
        return (a.unsqueeze(-1) * e_nb).sum(1)                                   # [N, d]

    def forward(self, batch: Batch, h: torch.Tensor | None = None) -> torch.Tensor:
        """Session representations [B, d] (normalised and scaled when `normalize`).

        `h`: the node embeddings emb[batch.x] when the caller already looked them up.
        """
        h, h_last = self._states(batch, h)
        s = self.readout(h, batch.alias, batch.mask, h_last)                    # [B, d]
        s = self.drop(s)
        if self.normalize:
            s = l2_normalize(s) * self.scale
        return s

    def _states(self, batch: Batch, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(node states after message passing [N, d], the last prefix item's state [B, d])."""
        h = self.node_inputs(batch, h)                                          # [N, d]
        h0 = h
        w = batch.edge_weight
        # transition counts are unbounded (loops in long sessions): log1p like the cooc weights
        ea = (torch.log1p(w) if self.graph_mode == GraphMode.TRANSITIONS else w).unsqueeze(-1).to(h.dtype)
        for block in self.blocks:
            h = block(h, batch.edge_index, ea)
        if self.highway is not None:
            g = torch.sigmoid(self.highway(torch.cat([h0, h], -1)))
            h = g * h0 + (1 - g) * h
        if h.shape[0] == 0:                        # every prefix empty: give the gathers a row to read
            h = h.new_zeros(1, h.shape[1])
        # index_select, not h[idx]: its backward is one index_add, while advanced indexing's
        # backward sorts the indices (the largest GPU kernel of a step when it was used here)
        has = (batch.lengths > 0).unsqueeze(-1)                                 # [B, 1]
        return h, h.index_select(0, batch.last_node) * has.to(h.dtype)          # [B, d]

    def encode_explained(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """`encode`'s (session vectors, repeat cells) from the same pass, with what `contributions`
        needs (the readout's parts, constant, attention, and the normalisation's factor): the
        explanation costs one readout decomposition more, not a second forward pass (eval mode)."""
        h, h_last = self._states(batch)
        s = self.readout(h, batch.alias, batch.mask, h_last)
        norm = torch.linalg.vector_norm(s, dim=-1).clamp_min(1e-6)
        reps = (l2_normalize(s) * self.scale if self.normalize else s).float()   # as `forward`, to the bit
        parts, const, alpha = self.readout.parts(h, batch.alias, batch.mask, h_last)
        factor = self.scale / norm if self.normalize else torch.ones_like(norm)
        return reps, self.repeat_cells(batch, reps), (parts, const, alpha, factor)

    # ---- items ----------------------------------------------------------------------------------
    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scoring vectors of `items` ([..., d]) or of the whole table ([n_table, d]) when None."""
        if items is None:
            v = self.embed(torch.arange(self.n_table, device=self.emb.weight.device)) if self.features \
                else self.emb.weight
        else:
            v = self.embed(items)
        return l2_normalize(v) if self.normalize else v

    def forward_with_items(self, batch: Batch, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(session reps [B, d], scoring vectors of `items` [..., d]) from one embedding lookup.

        On CPU every lookup's backward materialises a dense [V+1, d] gradient; one lookup instead of
        three makes sampled/BPR steps ~25% faster there (it changes nothing on the GPU).
        """
        n = batch.x.shape[0]
        e = self.embed(torch.cat([batch.x, items.reshape(-1)]))                # [N + |items|, d]
        v = e[n:].reshape(*items.shape, e.shape[-1])
        return self(batch, e[:n]), (l2_normalize(v) if self.normalize else v)

    def item_table(self) -> torch.Tensor:
        """Scoring vectors of all items [V+1, d]. Outside training (eval mode, no grad) the normalised
        table is cached: normalising 235K x 256 floats per request would cost more than the scoring.
        The cache is dropped whenever the mode changes or weights are loaded (fused optimisers update
        weights without bumping tensor versions, so a version check would not see training)."""
        if torch.is_grad_enabled() or self.training or not (self.normalize or self.features):
            return self.item_vectors(None)
        w = self.emb.weight
        key = (w.data_ptr(), w.device, w.dtype, self._ext_version)
        cache = getattr(self, "_table_cache", None)
        if cache is None or cache[0] != key:
            cache = (key, self.item_vectors(None))
            self._table_cache = cache
        return cache[1]

    def train(self, mode: bool = True) -> "SessionGNN":
        self._table_cache = None
        return super().train(mode)

    def load_state_dict(self, *args: Any, **kwargs: Any):
        self._table_cache = None
        return super().load_state_dict(*args, **kwargs)

    def _repeat_parts(self, batch: Batch, reps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(recency weight of each prefix cell [B, L] (0 at padding), gate per row [B, 1])."""
        B, L = batch.items.shape
        pos = torch.arange(L, device=reps.device)
        recency = (batch.lengths[:, None] - 1 - pos[None, :]).clamp(0, REPEAT_BUCKETS - 1)   # [B, L]
        w = torch.exp(self.recency_w.float())[recency] * batch.mask                            # [B, L]
        # the gate sees the unit-norm session vector: the scaled one (x16) saturates it at init
        unit = reps.float() / self.scale if self.normalize else reps.float()
        return w, F.softplus(self.repeat_gate(unit))                                           # [B, 1]

    def repeat_logits(self, batch: Batch, reps: torch.Tensor, items: torch.Tensor) -> torch.Tensor | None:
        """Extra logits of candidate `items` for the items already in the session (None when
        `repeat` is off): items [C], the same candidates for every row -> [B, C]; items [B, K]:
        per-row candidates -> [B, K]. The full catalogue goes through `add_repeat_logits`."""
        if not self.repeat and not self.switch:
            return None
        cells = self.repeat_cells(batch, reps)
        cand = items[None, :].expand(batch.items.shape[0], -1) if items.dim() == 1 else items
        return cells_to_candidates(batch.items, cells, cand)

    def add_repeat_logits(self, batch: Batch, reps: torch.Tensor, logits: torch.Tensor,
                          first_item: int = 0) -> torch.Tensor:
        """`logits` [B, W] (column c = item c + first_item) plus gate * log1p(sum of the recency
        weights of the positions holding each session item); in place, returned.

        Only the B x L session cells are touched: a dense [B, V+1] repeat tensor cost more than the
        whole scoring matmul on the CPU (six full-size passes forward and backward). Cells holding
        the same item are grouped by sorting their keys (no host sync); each cell adds its group's
        value divided by the group size, so the group adds its value once.
        """
        if not self.repeat and not self.switch:
            return logits
        B, L = batch.items.shape
        cells = self.repeat_cells(batch, reps)                                                # [B, L]
        order, group, size = self._cell_groups(batch)
        row = torch.div(order, L, rounding_mode="floor")
        col = (batch.items.reshape(-1)[order] - first_item).clamp(min=0)
        # each cell adds its item's value divided by the cells holding it: the item gets it once;
        # padding cells hold 0 and add 0 to their row's first column. index_put_ on the 2-D tensor,
        # not index_add_ on a flat view: autograd copies a view's whole base in backward
        val = cells.reshape(-1)[order] / size[group]
        return logits.index_put_((row, col), val.to(logits.dtype), accumulate=True)

    def _cell_groups(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cells of one item grouped by sorting their (row, item) keys: (sort order [B*L], group of
        each sorted cell [B*L], cells per group [groups]). O(B L) memory, whatever the lengths."""
        B = batch.items.shape[0]
        key = (torch.arange(B, device=batch.items.device)[:, None] * self.n_table + batch.items).reshape(-1)
        key, order = torch.sort(key)
        first = torch.ones_like(key, dtype=torch.bool)
        first[1:] = key[1:] != key[:-1]
        group = torch.cumsum(first.long(), 0) - 1
        size = torch.zeros(key.shape[0], dtype=torch.float32, device=key.device).index_add_(
            0, group, torch.ones(key.shape[0], dtype=torch.float32, device=key.device))
        return order, group, size

    def repeat_cells(self, batch: Batch, reps: torch.Tensor) -> torch.Tensor:
        """float32 [B, L]: the logit each prefix cell's item gets on top of its dot product (every
        cell of an item holds the same value; 0 at padding, and everywhere when neither `repeat` nor
        `switch` is on). With the session vectors this is all a caller needs to score any candidate
        (`session_scores`, `candidate_scores`): the serving path and the ONNX export use it."""
        B, L = batch.items.shape
        zero = torch.zeros(batch.items.shape, dtype=torch.float32, device=batch.items.device)
        if not self.repeat and not self.switch:
            return zero
        order, group, size = self._cell_groups(batch)
        rep = zero
        if self.repeat:
            w, gate = self._repeat_parts(batch, reps)
            total = torch.zeros(group.shape[0], dtype=w.dtype, device=w.device).index_add_(
                0, group, w.reshape(-1)[order])
            cell = torch.empty_like(total).index_put_((order,), total[group])                # back to cell order
            rep = gate * torch.log1p(cell.view(B, L)) * batch.mask
        if self.switch:
            rep = self.switch_cells(batch, reps, rep, size[group].new_empty(B * L).index_put_((order,), size[group]))
        return rep

    def switch_cells(self, batch: Batch, reps: torch.Tensor, rep: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """The switch's cell values [B, L]: z(s) + rep - logsumexp over the session's distinct items
        of (dot + rep), so that dot + value = z(s) + log softmax_session(dot + rep). `count` [B*L]:
        the cells holding each cell's item (a repeated item counts once in the logsumexp)."""
        B, L = batch.items.shape
        dot = (self.item_vectors(batch.items).float() @ reps.float()[:, :, None]).squeeze(-1)   # [B, L]
        x = dot + rep - torch.log(count.view(B, L))
        lse = torch.logsumexp(x.masked_fill(~batch.mask, float("-inf")), dim=1, keepdim=True)  # [B, 1]
        unit = reps.float() / self.scale if self.normalize else reps.float()
        z = self.switch_gate(unit)                                                            # [B, 1]
        has = batch.mask.any(1, keepdim=True)
        val = z + rep - torch.where(has, lse, torch.zeros_like(lse))
        return val * batch.mask

    def contributions(self, batch: Batch, cand: torch.Tensor, explained: tuple | None = None) -> dict[str, torch.Tensor]:
        """Why candidates `cand` (long [B, K]) score as they do, from the readout's decomposition of
        the session vector (eval mode): `cells` float [B, K, L], each prefix cell's share of the
        candidate's dot-product score (they and `prior` [B, K], the readout's constant, add up to
        it), `attention` [B, L] (attention readout; else absent) and `repeat` [B, K] (the repeat
        scorer's logit of a candidate in the session). The cell states mix in their neighbours by
        message passing: a cell's share is that of its position in the session. `explained`:
        `encode_explained`'s output for this batch (else it is computed)."""
        reps, rep_cells, (parts, const, alpha, factor) = explained or self.encode_explained(batch)
        v = F.embedding(cand, self.item_table()).float()                                    # [B, K, d]
        cells = torch.einsum("bld,bkd->bkl", parts.float(), v) * factor[:, None, None]
        prior = (v @ const.float()[:, :, None]).squeeze(-1) * factor[:, None]
        # a masked max: with the switch a session item's cell value can be negative
        hit = batch.items[:, :, None] == cand[:, None, :]                                   # [B, L, K]
        repeat = rep_cells[:, :, None].expand_as(hit).masked_fill(~hit, float("-inf")).amax(1)
        repeat = torch.where(hit.any(1), repeat, torch.zeros_like(repeat))
        out = {"cells": cells * batch.mask[:, None, :], "prior": prior, "repeat": repeat}
        if alpha is not None:
            out["attention"] = alpha
        return out

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(session vectors float32 [B, d], repeat logit per prefix cell [B, L]): the model's whole
        per-request work; scoring against the item table is `session_scores` / `candidate_scores`."""
        reps = self(batch).float()
        return reps, self.repeat_cells(batch, reps)

    def score(self, batch: Batch) -> torch.Tensor:
        """float32 [B, V+1] logits; column 0 (padding) = -inf.

        The final product runs in float32 even under autocast: bfloat16 logits (8-bit mantissa) tie
        often among many items, and ties flatter the target's rank.
        """
        reps, table = self(batch), self.item_table()
        with torch.autocast(reps.device.type, enabled=False):
            logits = self.add_repeat_logits(batch, reps, reps.float() @ table.float().T)
            return mask_padding(logits)


# ---- scoring from the encoder's parts (serving, ONNX) ------------------------------------------------
def session_scores(reps: torch.Tensor, cells: torch.Tensor, items: torch.Tensor,
                   table: torch.Tensor) -> torch.Tensor:
    """float32 [B, V+1] logits from `SessionGNN.encode`'s parts, equal to `SessionGNN.score`: the
    dot products plus each session item's repeat logit (cells of one item carry the same value, so
    writing it once per cell adds it once); column 0 = -inf."""
    logits = reps.float() @ table.float().T
    logits.scatter_(1, items, logits.gather(1, items) + cells)
    return mask_padding(logits)


def candidate_scores(reps: torch.Tensor, cells: torch.Tensor, items: torch.Tensor,
                     table: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """float32 [B, K] logits of per-row candidates `cand` (long [B, K]) from the encoder's parts: the
    same values `session_scores` gives those items (padding candidates = -inf)."""
    # embedding() gathers whole rows (index_select); table[cand] takes the general indexing kernel,
    # ~4x slower for a few hundred random rows of a large table (0.14 vs 0.04 ms, dev CPU)
    dot = torch.bmm(F.embedding(cand, table).float(), reps.float()[:, :, None]).squeeze(-1)  # [B, K]
    return (dot + cells_to_candidates(items, cells, cand)).masked_fill(cand == 0, float("-inf"))


def cells_to_candidates(items: torch.Tensor, cells: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """float32 [B, K]: each candidate's cell value when it is one of the row's session items (the
    cells of an item hold the same value, which may be negative with the switch), else 0."""
    hit = items[:, :, None] == cand[:, None, :]                                       # [B, L, K]
    val = torch.where(hit, cells[:, :, None].float(), torch.full_like(cells[:, :, None].float(), float("-inf")))
    best = val.amax(1)
    return torch.where(hit.any(1), best, torch.zeros_like(best))


# ---- builder (see engine.models.registry) -------------------------------------------------------
def build_gnn(cfg: GNNConfig, data: Any, conv: str) -> SessionGNN:
    """A session GNN with `conv` layers from its typed config; `data` gives the item count, the
    Laplacian PE and the item features (dataset artifacts, or a checkpoint's stand-in)."""
    features = data.item_features() if cfg.item_features and hasattr(data, "item_features") else None
    return SessionGNN(
        data.n_items, hidden=cfg.hidden, conv=conv, layers=cfg.layers, heads=getattr(cfg, "heads", 1),
        ffn_mult=getattr(cfg, "ffn_mult", 0), readout=cfg.readout, pe=getattr(data, "pe", None),
        use_pe=cfg.use_pe, dropout=cfg.dropout, normalize=cfg.normalize, scale=cfg.scale,
        graph_mode=cfg.graph_mode, repeat=cfg.repeat, pos_emb=cfg.pos_emb,
        neighbors=_neighbors(cfg.global_k, data) if cfg.global_k else None, switch=cfg.switch,
        contrastive=cfg.contrastive, cl_temp=cfg.cl_temp, highway=cfg.highway,
        features=features, cold_dropout=cfg.cold_dropout)


def _neighbors(k: int, data: Any) -> tuple[np.ndarray, np.ndarray]:
    """The dataset graph's neighbour table, or zeros of its shape for a checkpoint's stand-in
    (the table is part of the weights and is loaded with them)."""
    graph = getattr(data, "graph", None)
    if graph is None:
        return np.zeros((data.n_items + 1, k), np.int64), np.zeros((data.n_items + 1, k), np.float32)
    return graph.neighbor_table(k)
