"""The contract of an exported session GNN (.onnx file), shared by the exporter and the runtime.

Inputs are the arrays of `engine.data.batches.Batch` (build them with `BatchBuilder.from_prefixes`,
then `feeds(batch)`); B sessions, L prefix cells, N graph nodes, M edges, all dynamic:

    items        int64   [B, L]  prefix items, left-aligned, 0 = padding
    lengths      int64   [B]     items in each prefix (0 = empty session)
    mask         bool    [B, L]  items > 0
    x            int64   [N]     item of each node (N >= 1: `feeds` adds one dummy node when every
                                 prefix is empty)
    edge_index   int64   [2, M]  session-graph edges (node indices)
    edge_weight  float32 [M]     edge weights (transition counts, or log1p co-occurrence counts)
    batch        int64   [N]     session of each node
    alias        int64   [B, L]  node of each prefix cell (0 at padding)
    last_node    int64   [B]     node of the last prefix item (0 for an empty prefix)

Outputs:

    scores   float32 [B, V+1]  logits of every item, column 0 = -inf (= SessionGNN.score)
    session  float32 [B, d]    session vectors (= SessionGNN.encode's first output)
    repeat   float32 [B, L]    repeat logit of the item at each prefix cell (= encode's second)

The scoring item table (`SessionGNN.item_table()` in eval mode) is a constant of the graph: the
initializer `item_vectors_t`, float32 [d, V+1] (transposed: the layout the final MatMul reads).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.core.errors import InputError, SessrecError

CONTRACT_VERSION = "1"
INPUTS: tuple[tuple[str, str, str], ...] = (
    ("items", "int64", "[B, L]"), ("lengths", "int64", "[B]"), ("mask", "bool", "[B, L]"),
    ("x", "int64", "[N]"), ("edge_index", "int64", "[2, M]"), ("edge_weight", "float32", "[M]"),
    ("batch", "int64", "[N]"), ("alias", "int64", "[B, L]"), ("last_node", "int64", "[B]"))
INPUT_NAMES = tuple(name for name, _, _ in INPUTS)
OUTPUT_NAMES = ("scores", "session", "repeat")
TABLE_INITIALIZER = "item_vectors_t"        # float32 [d, V+1]
# metadata_props keys (all values are strings)
META_KEYS = ("contract_version", "sessrec_version", "run_id", "model", "dataset", "n_items", "hidden",
             "graph_mode", "item_fingerprint", "checkpoint", "checkpoint_mtime_ns", "checkpoint_size",
             "epoch", "item_table")


class ExportError(SessrecError):
    """An export cannot be made or trusted (parity with PyTorch failed, the graph is not as expected)."""


def feeds(batch: Any) -> dict[str, np.ndarray]:
    """The ONNX inputs of a `Batch` as contiguous host arrays of the contract's dtypes.

    A batch whose prefixes are all empty has no graph nodes; ONNX gathers cannot read an empty
    node table (PyTorch's model pads it with a zero row), so one dummy node of item 0 in session 0
    is added: no cell and no edge points at it, and the empty prefixes' outputs do not read it.
    """
    out = {name: np.ascontiguousarray(getattr(batch, name).detach().cpu().numpy().astype(dtype, copy=False))
           for name, dtype, _ in INPUTS}
    if out["x"].shape[0] == 0:
        out["x"] = np.zeros(1, np.int64)
        out["batch"] = np.zeros(1, np.int64)
    return out


def check_fingerprint(meta: dict[str, str], items: Any, source: object) -> None:
    """Refuse an export whose item index is not `items` (an `ItemIndex`): its item numbers would
    name other items. InputError naming `source` (the file) and what to do."""
    want = meta.get("item_fingerprint")
    have = items.fingerprint()
    if want != have:
        raise InputError(f"{source}: exported for item index {want or '(none recorded)'} of dataset "
                         f"{meta.get('dataset', '?')!r}, but the item index given is {have}; the dataset "
                         f"was rebuilt since: retrain the model and re-export it "
                         f"(sessrec export RUN --onnx OUT.onnx)")
