"""Why an item was recommended: its evidence, from the model that recommended it.

For each recommended item, a dict:

    item           the raw id
    contributors   the session items that contributed most, the largest first (at most 5), each
                   with `cooc` (how often the two were linked in the training sessions: the train
                   co-occurrence graph's count) and, for a GNN, `contribution` (the item's share of
                   the recommended item's score, in score units: the readout's decomposition of the
                   session vector, `SessionGNN.contributions`, summed over the item's positions),
                   `share` (that over the sum of all contributions' magnitudes) and `attention` (the
                   attention readout's weight of the item's positions)
    repeat         a session item recommended again: {"score": the repeat scorer's logit, "share":
                   of the item's score's magnitude}
    neighbours     session-kNN models (sknn, stan, vstan): the training sessions that voted for
                   the item, the heaviest first (at most 5): {"session", "vote", "share"}
    parts          the hybrid: each part's share of the mixed probability, {"gnn", "baseline",
                   "weight"} (and the GNN's contributors, the baseline's neighbours as above)

A model without its own decomposition (popularity, item-kNN, sequential rules) names the session
items with the most co-occurrences; every model gets the co-occurrence counts. The GNN's evidence is
read from the pass that scored the request when the eager model served it (`encode_explained`);
an exported encoder (ONNX, compiled) is explained by the eager model's pass, which costs its time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.data.batches import Batch
from engine.models.gnn import SessionGNN

TOP_CONTRIBUTORS = 5


def _gnn_of(model: Any) -> SessionGNN | None:
    if isinstance(model, SessionGNN):
        return model
    return getattr(model, "gnn", None) if isinstance(getattr(model, "gnn", None), SessionGNN) else None


def _knn_of(model: Any) -> Any:
    if hasattr(model, "voters"):
        return model
    base = getattr(model, "baseline", None)
    return base if hasattr(base, "voters") else None


@torch.inference_mode()
def explain_batch(rec: Any, batch: Batch, top: torch.Tensor, vals: torch.Tensor,
                  explained: tuple | None = None) -> list[list[dict]]:
    """The evidence of every recommended item (`top`, long [B, K] catalogue indices, `vals` their
    scores) of each row of `batch`, as the module docstring describes; -inf rows' items included
    (the caller drops them with their items)."""
    model = rec.model
    B, K = top.shape
    items = batch.items.cpu().numpy()
    mask = batch.mask.cpu().numpy()
    top_np = top.cpu().numpy()
    raw_top = rec.items.decode(top_np.reshape(-1)).reshape(B, K)
    raw_items = rec.items.decode(items.reshape(-1)).reshape(items.shape)
    L = items.shape[1]
    # co-occurrence counts of every (recommended, session) pair: [B, K, L]
    cooc = np.zeros((B, K, L), np.float32)
    if rec.graph is not None:
        a = np.broadcast_to(top_np[:, :, None], (B, K, L)).reshape(-1)
        b = np.broadcast_to(items[:, None, :], (B, K, L)).reshape(-1)
        cooc = rec.graph.counts(a, b).reshape(B, K, L) * mask[:, None, :]
    gnn = _gnn_of(model)
    contrib = None
    if gnn is not None:
        own = explained if gnn is model else None
        contrib = {k: v.float().cpu().numpy() for k, v in gnn.contributions(batch, top, own).items()}
    knn = _knn_of(model)
    voters = knn.voters(batch, top) if knn is not None else None
    parts = None
    if gnn is not None and gnn is not model and hasattr(model, "parts"):      # the hybrid
        g, b_ = model.parts(batch)
        w = float(model.weight)
        pg, pb = (1 - w) * g.gather(1, top), w * b_.gather(1, top)
        total = (pg + pb).clamp(min=1e-300)
        parts = ((pg / total).cpu().numpy(), (pb / total).cpu().numpy(), w)
    out: list[list[dict]] = []
    for r in range(B):
        cells = np.flatnonzero(mask[r])
        # the session's distinct items in order of first appearance; each cell's distinct item
        uniq, first, inv = np.unique(items[r, cells], return_index=True, return_inverse=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        inv, first = rank[inv], first[order]
        onehot = np.zeros((len(cells), len(uniq)), np.float32)
        onehot[np.arange(len(cells)), inv] = 1.0
        d_raw = raw_items[r, cells[first]]
        d_cooc = cooc[r][:, cells[first]]                                        # [K, D]
        if contrib is not None:
            d_con = contrib["cells"][r][:, cells] @ onehot                           # [K, D]
            d_att = contrib["attention"][r, cells] @ onehot if "attention" in contrib else None
            total = np.abs(contrib["cells"][r][:, cells]).sum(1)
            ranking = np.argsort(-d_con, axis=1, kind="stable")
        else:
            ranking = np.argsort(-d_cooc, axis=1, kind="stable")
        row = []
        for j in range(K):
            e: dict[str, Any] = {"item": int(raw_top[r, j])}
            cand = []
            for d in ranking[j, :TOP_CONTRIBUTORS].tolist():
                c: dict[str, Any] = {"item": int(d_raw[d]), "cooc": int(d_cooc[j, d])}
                if contrib is not None:
                    c["contribution"] = round(float(d_con[j, d]), 4)
                    c["share"] = round(float(d_con[j, d] / (total[j] or 1.0)), 4)
                    if d_att is not None:
                        c["attention"] = round(float(d_att[d]), 4)
                cand.append(c)
            e["contributors"] = cand
            if contrib is not None and contrib["repeat"][r, j]:
                rep = float(contrib["repeat"][r, j])
                dot = float(contrib["cells"][r, j].sum() + contrib["prior"][r, j])
                e["repeat"] = {"score": round(rep, 4), "share": round(abs(rep) / ((abs(rep) + abs(dot)) or 1.0), 4)}
            if voters is not None:
                e["neighbours"] = [{"session": s, "vote": round(v, 6), "share": round(sh, 4)}
                                   for s, v, sh in voters[r][j]]
            if parts is not None:
                e["parts"] = {"gnn": round(float(parts[0][r, j]), 4), "baseline": round(float(parts[1][r, j]), 4),
                              "weight": parts[2]}
            row.append(e)
        out.append(row)
    return out


def explanation_text(e: dict | None, n: int = 2) -> str:
    """One line for a table cell: the top `n` contributors with their share (or co-occurrence
    count), the repeat share, the voting neighbours, the hybrid's split."""
    if not e:
        return ""
    if "popularity" in e:
        return f"popular ({e['popularity']:,} train events)"
    bits = []
    for c in e.get("contributors", [])[:n]:
        what = f"{c['share']:.0%}" if "share" in c else f"cooc {c['cooc']}"
        if "share" in c and c.get("cooc"):
            what += f", cooc {c['cooc']}"
        bits.append(f"{c['item']} ({what})")
    text = "from " + ", ".join(bits) if bits else ""
    if "repeat" in e:
        text += f"; repeat {e['repeat']['share']:.0%}"
    if e.get("neighbours"):
        text += f"; {len(e['neighbours'])} neighbour sessions"
    if "parts" in e:
        text += f"; gnn {e['parts']['gnn']:.0%} / baseline {e['parts']['baseline']:.0%}"
    return text.lstrip("; ")
