"""Serving an exported session GNN with ONNX Runtime (no PyTorch model needed).

    enc = OnnxEncoder(ensure_run_onnx(run))      # the run's own export, re-made when stale
    enc.check_items(items)                       # refuse a file made for another item index
    reps, cells = enc.encode(batch)              # = SessionGNN.encode
    scores = session_scores(reps, cells, batch.items, enc.item_table())   # = SessionGNN.score

`encode` runs a sub-model cut from the file at load (inputs -> `session`, `repeat`): it skips the
[B, d] x [d, V+1] product and the table read of the full `scores` output, which dominates the cost
of a request when the catalogue is large (200K items, d = 64, one thread: encode 0.26 ms vs scores
4.8 ms for one session; 1.6 vs 18 ms for 32). `scores` runs the full graph (built on first use).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.core.errors import InputError
from engine.core.workspace import RunDir
from engine.export.contract import CONTRACT_VERSION, OUTPUT_NAMES, check_fingerprint, feeds
from engine.export.trace import ensure_fresh

ENCODE_OUTPUTS = ("session", "repeat")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata_props of an exported file (InputError when it is not a readable sessrec export)."""
    return _metadata(_load(Path(path)), Path(path))


def _load(path: Path):
    import onnx
    if not path.exists():
        raise InputError(f"{path}: no such ONNX file (sessrec export RUN --onnx {path})")
    try:
        return onnx.load(str(path))
    except Exception as e:         # truncated or foreign file: protobuf raises its own kinds
        raise InputError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from e


def _metadata(proto, path: Path) -> dict[str, str]:
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("contract_version") != CONTRACT_VERSION:
        raise InputError(f"{path}: not a sessrec ONNX export of contract {CONTRACT_VERSION} "
                         f"(found {meta.get('contract_version')!r}); re-export it with this sessrec")
    return meta


class OnnxEncoder:
    """An exported session GNN: `encode` (session vectors, repeat cells), `scores`, the item table."""

    def __init__(self, path: str | os.PathLike, threads: int = 1) -> None:
        import onnx
        from onnx import numpy_helper
        self.path = Path(path)
        self.threads = threads
        proto = _load(self.path)
        self.metadata = _metadata(proto, self.path)
        self.n_items = int(self.metadata["n_items"])
        self.hidden = int(self.metadata["hidden"])
        self.graph_mode = self.metadata["graph_mode"]
        name, layout = self.metadata["item_table"].split(":")
        init = next((i for i in proto.graph.initializer if i.name == name), None)
        if init is None:
            raise InputError(f"{self.path}: the item table {name!r} named in its metadata is missing")
        table = numpy_helper.to_array(init)
        self._table = torch.from_numpy(np.ascontiguousarray(table.T if layout == "dv" else table))
        if tuple(self._table.shape) != (self.n_items + 1, self.hidden):
            raise InputError(f"{self.path}: item table has shape {tuple(self._table.shape)}; expected "
                             f"({self.n_items + 1}, {self.hidden})")
        # the encode-only sub-model: what `session` and `repeat` depend on (no item-table product)
        inputs = [i.name for i in proto.graph.input]
        sub = onnx.utils.Extractor(proto).extract_model(inputs, list(ENCODE_OUTPUTS))
        del proto
        blob = sub.SerializeToString()
        self.encode_model_bytes = len(blob)       # vs the file's size: the table is not in it
        self._encode_sess = self._session(blob)
        self._encode_inputs = {i.name for i in self._encode_sess.get_inputs()}
        self._full_sess = None

    def _session(self, model: bytes | str):
        from engine.export.onnx import ort_session
        return ort_session(model, self.threads)

    # ---- queries -------------------------------------------------------------------------------
    def item_table(self) -> torch.Tensor:
        """float32 [V+1, d]: the scoring vectors stored in the file (row 0 = padding)."""
        return self._table

    def encode(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(session vectors float32 [B, d], repeat logit per prefix cell float32 [B, L]) of a `Batch`
        built for this model's graph mode: the same contract as `SessionGNN.encode`."""
        feed = {k: v for k, v in feeds(batch).items() if k in self._encode_inputs}
        reps, cells = self._encode_sess.run(list(ENCODE_OUTPUTS), feed)
        return torch.from_numpy(reps), torch.from_numpy(cells)

    def scores(self, batch: Any) -> torch.Tensor:
        """float32 [B, V+1] logits of every item (column 0 = -inf): the full graph, = SessionGNN.score."""
        if self._full_sess is None:
            self._full_sess = self._session(str(self.path))
        return torch.from_numpy(self._full_sess.run([OUTPUT_NAMES[0]], feeds(batch))[0])

    def check_items(self, items: Any) -> None:
        """InputError unless this file was exported for item index `items` (an `ItemIndex`)."""
        check_fingerprint(self.metadata, items, self.path)


# ---- a run's own export ---------------------------------------------------------------------------
def ensure_run_onnx(run: RunDir, *, parity_limit: int = 2000) -> Path:
    """`<run>/export/model.onnx`, exported (with its parity check) when it is missing, unreadable or
    was made from another checkpoint than the one the run serves now (name, mtime, size differ)."""
    from engine.export.onnx import export_onnx
    return ensure_fresh(run, run.onnx, read_metadata,
                        lambda: export_onnx(run, run.onnx, parity_limit=parity_limit).path)
