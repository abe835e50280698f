"""Message-passing blocks for session graphs: a PyG conv wrapped in residual + LayerNorm (+ FFN).

Edge weights: the batch builder gives counted transitions (1, 2, ...) or log1p co-occurrence counts.
GAT and the Graph Transformer read them as a 1-d edge attribute (`edge_dim=1`: a learned per-head
term in the attention logits, and for TransformerConv also in the messages). SAGEConv has no edge
input: it takes a plain mean over distinct neighbours, so weights are ignored there.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GATConv, SAGEConv, TransformerConv

from engine.core.schema import Conv, values
from engine.models import pyg_modules

pyg_modules.install()       # before any conv is built: its generated code goes to sessrec's cache

CONVS = values(Conv)


class ConvBlock(nn.Module):
    """h <- LN(h + drop(conv(h))); with `ffn_mult` > 0 also h <- LN(h + drop(FFN(h))) (post-norm)."""

    def __init__(self, conv: str, d: int, heads: int = 2, dropout: float = 0.0, ffn_mult: int = 0) -> None:
        super().__init__()
        if conv not in CONVS:
            raise ValueError(f"conv {conv!r}; expected one of {', '.join(CONVS)}")
        if conv != "sage" and d % heads:
            raise ValueError(f"hidden size {d} must be divisible by heads {heads}")
        self.kind = conv
        if conv == "sage":
            self.conv = SAGEConv(d, d)                                  # mean aggr + root weight
        elif conv == "gat":
            # self-loops are added in forward (no sync: GATConv's own remove+add uses a bool mask)
            self.conv = GATConv(d, d // heads, heads=heads, concat=True, edge_dim=1, add_self_loops=False)
        else:
            # beta=True (gated residual): out = b * W_s h + (1 - b) * attn,
            # b = sigmoid(w^T [attn, W_s h, attn - W_s h])
            self.conv = TransformerConv(d, d // heads, heads=heads, concat=True, beta=True, edge_dim=1)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.ffn = None
        if ffn_mult > 0:
            self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Linear(ffn_mult * d, d))
            self.norm2 = nn.LayerNorm(d)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        # h: [N, d], edge_index: [2, M], edge_attr: [M, 1]
        if self.kind == "sage":
            out = self.conv(h, edge_index)
        elif self.kind == "gat":
            loops = torch.arange(h.shape[0], device=h.device)
            ei = torch.cat([edge_index, torch.stack([loops, loops])], dim=1)
            ea = torch.cat([edge_attr, edge_attr.new_zeros(h.shape[0], 1)])  # attr 0 marks "self"
            out = self.conv(h, ei, ea)
        else:
            out = self.conv(h, edge_index, edge_attr)
        h = self.norm(h + self.drop(out))
        if self.ffn is not None:
            h = self.norm2(h + self.drop(self.ffn(h)))
        return h
