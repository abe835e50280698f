"""Session readouts: node states -> one vector per session.

Readouts work on positions, not nodes (h[alias] with the prefix mask), so an item clicked three
times counts three times, as in SR-GNN. Empty prefixes (no positions) give a finite vector: zeros
for mean/max/last, the output bias for attention.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.core.schema import Readout as ReadoutKind
from engine.core.schema import values

READOUTS = values(ReadoutKind)


MAX_POSITIONS = 64   # reversed positions beyond this share the last embedding


class Readout(nn.Module):
    def __init__(self, kind: str, d: int, positions: bool = False) -> None:
        super().__init__()
        if kind not in READOUTS:
            raise ValueError(f"readout {kind!r}; expected one of {', '.join(READOUTS)}")
        self.kind = kind
        if kind == ReadoutKind.ATTENTION:
            # SR-GNN: alpha_i = q^T sigmoid(W1 h_last + W2 h_i + c); s = W3 [sum_i alpha_i h_i ; h_last]
            self.w1 = nn.Linear(d, d, bias=False)
            self.w2 = nn.Linear(d, d, bias=True)   # its bias is c
            self.q = nn.Linear(d, 1, bias=False)
            self.w3 = nn.Linear(2 * d, d, bias=True)
            # reversed position embeddings (GCE-GNN, SGNN-HN): position 0 = the last click; they
            # enter the attention weights only, the weighted sum is over the node states
            self.pos = nn.Embedding(MAX_POSITIONS, d) if positions else None
            if self.pos is not None:
                nn.init.normal_(self.pos.weight, std=d ** -0.5)

    def forward(self, h: torch.Tensor, alias: torch.Tensor, mask: torch.Tensor,
                h_last: torch.Tensor) -> torch.Tensor:
        # h: [N, d] node states, alias: long [B, L] node of each position, mask: bool [B, L],
        # h_last: [B, d] (0 for empty prefixes)
        B, L = alias.shape
        if self.kind == "last":
            return h_last
        if self.kind == "max":
            # index_select, not h[idx]: its backward is one index_add (advanced indexing sorts)
            h_pos = h.index_select(0, alias.reshape(-1)).view(B, L, h.shape[1])   # [B, L, d]
            neg = torch.finfo(h_pos.dtype).min                        # not -inf: keeps grads finite
            out = h_pos.masked_fill(~mask.unsqueeze(-1), neg).amax(1)
            return out * mask.any(1, keepdim=True).to(out.dtype)      # empty prefix -> 0
        # mean and attention work on the C filled cells only, not the B x L padded grid: one long
        # session in a batch pads every row to its length (146 in YooChoose 1/64, mean 4)
        row, col = mask.nonzero(as_tuple=True)                                          # [C]
        node = alias[row, col]                                                          # [C]
        h_c = h.index_select(0, node)                                                   # [C, d]
        if self.kind == "mean":
            n = mask.sum(1, keepdim=True).clamp(min=1).to(h.dtype)
            return h.new_zeros(B, h.shape[1]).index_add_(0, row, h_c) / n
        alpha = self.attention(h, node, row, col, mask, h_last)                        # [C, 1]
        s_g = h.new_zeros(B, h.shape[1]).index_add_(0, row, alpha * h_c)               # [B, d]
        return self.w3(torch.cat([s_g, h_last], dim=-1))                               # [B, d]

    def attention(self, h: torch.Tensor, node: torch.Tensor, row: torch.Tensor, col: torch.Tensor,
                  mask: torch.Tensor, h_last: torch.Tensor) -> torch.Tensor:
        """The attention readout's weight of each filled cell (row, col holding `node`): [C, 1]."""
        # W2 on the N nodes, then gathered to the C cells: same values as W2(h_c), fewer
        # multiply-adds since cells outnumber nodes (repeats)
        w2_c = self.w2(h).index_select(0, node)                                         # [C, d]
        if self.pos is not None:
            # W2 (h + p) = W2 h + W2 p: the position part is a [P, d] table, gathered per cell
            n = mask.sum(1)
            rev = (n[row] - 1 - col).clamp(0, MAX_POSITIONS - 1)                        # [C]
            w2_c = w2_c + (self.pos.weight @ self.w2.weight.T)[rev]
        return self.q(torch.sigmoid(self.w1(h_last).index_select(0, row) + w2_c))      # [C, 1]

    def parts(self, h: torch.Tensor, alias: torch.Tensor, mask: torch.Tensor,
              h_last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The session vector as a sum over the prefix cells plus a constant (what explanations
        attribute): (parts [B, L, d], constant [B, d], attention weights [B, L] or None), with
        parts.sum(1) + constant == forward(...) for every readout (the last cell holds h_last's
        share; max splits each dimension to the cell that holds its maximum)."""
        B, L = alias.shape
        d = h.shape[1]
        h_pos = h.index_select(0, alias.reshape(-1)).view(B, L, d) * mask.unsqueeze(-1)   # [B, L, d]
        n = mask.sum(1)
        last = (n - 1).clamp(min=0)
        onehot_last = torch.zeros(B, L, 1, dtype=h.dtype, device=h.device)
        onehot_last.scatter_(1, last[:, None, None], (n > 0).to(h.dtype)[:, None, None])
        const = h.new_zeros(B, d)
        if self.kind == "last":
            return onehot_last * h_last[:, None, :], const, None
        if self.kind == "mean":
            return h_pos / n.clamp(min=1).to(h.dtype)[:, None, None], const, None
        if self.kind == "max":
            neg = torch.finfo(h.dtype).min
            arg = h_pos.masked_fill(~mask.unsqueeze(-1), neg).argmax(1, keepdim=True)          # [B, 1, d]
            pick = torch.zeros_like(h_pos).scatter_(1, arg, 1.0) * mask.any(1).to(h.dtype)[:, None, None]
            return h_pos * pick, const, None
        row, col = mask.nonzero(as_tuple=True)
        alpha_c = self.attention(h, alias[row, col], row, col, mask, h_last).squeeze(-1)     # [C]
        alpha = h.new_zeros(B, L)
        alpha[row, col] = alpha_c
        w3a, w3b = self.w3.weight[:, :d], self.w3.weight[:, d:]
        parts = (alpha.unsqueeze(-1) * h_pos) @ w3a.T + onehot_last * (h_last @ w3b.T)[:, None, :]
        return parts, const + self.w3.bias, alpha
