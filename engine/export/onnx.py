"""ONNX export of a trained session GNN run, checked against PyTorch before it is written.

    report = export_onnx(ws.run("gt-1"), Path("gt.onnx"))     # ExportReport: path, sizes, parity

The model (eval mode, best checkpoint else last) is wrapped so that the graph takes the `Batch`
arrays and returns `scores`, `session` and `repeat` (the contract: engine.export.contract). The item
table is computed once here and stored as a constant (not re-normalised per call). The export is
refused (ExportError, no file) unless ONNX Runtime reproduces PyTorch (the parity rules of
engine.export.trace).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import __version__
from engine.core.atomic import write_bytes
from engine.core.progress import ProgressFn
from engine.core.workspace import RunDir
from engine.data.batches import Batch
from engine.export.contract import CONTRACT_VERSION, INPUT_NAMES, OUTPUT_NAMES, TABLE_INITIALIZER, ExportError, feeds
from engine.export.trace import (
    ExportGraph,
    ParityReport,
    check_parity,
    dynamic_shapes,
    export_inputs,
    load_run,
    quiet,
    rel_error,
)
from engine.models.checkpoint import LoadedRun

__all__ = ["ExportReport", "export_onnx", "load_run", "ort_session", "rel_error"]


@dataclass
class ExportReport:
    path: Path
    size_bytes: int
    seconds: float               # the whole export: load, trace, parity, write
    export_seconds: float        # tracing and conversion to ONNX
    parity: ParityReport
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["size_mb"] = round(self.size_mb, 3)
        return d


# ---- export ----------------------------------------------------------------------------------------
def export_onnx(run: RunDir, out: Path, *, parity_limit: int = 2000, seed: int = 0, batch_size: int = 256,
                min_top10: float = 0.99, max_rel: float = 1e-4,
                progress: ProgressFn | None = None) -> ExportReport:
    """Export `run` to `out` (written atomically, only after the parity check passed)."""
    t0 = time.perf_counter()
    out = Path(out)
    lr = load_run(run)
    inputs = export_inputs(lr, parity_limit, seed)

    t1 = time.perf_counter()
    graph = ExportGraph(lr.model).eval()
    proto = _to_onnx(graph, inputs.sample)
    table_name = _name_item_table(proto, graph.item_vectors.numpy())
    meta = _metadata(run, lr, table_name)
    import onnx
    onnx.helper.set_model_props(proto, meta)
    try:
        blob = proto.SerializeToString()
    except ValueError as e:       # protobuf's 2 GB limit
        raise ExportError(f"run {run.run_id}: the ONNX model is larger than 2 GB ({e}); not supported") from e
    export_seconds = time.perf_counter() - t1

    sess = ort_session(blob)

    def outputs(b):
        return tuple(torch.from_numpy(a) for a in sess.run(list(OUTPUT_NAMES), feeds(b)))
    parity = check_parity(lr.model, outputs, inputs, batch_size=batch_size, progress=progress)
    parity.check(f"run {run.run_id}: the ONNX model ({out})", min_top10, max_rel)
    write_bytes(out, blob, "ONNX model")
    from engine.tracking import log_run_artifact
    log_run_artifact(run, out, "export")          # a run tracked in MLflow gets its export (never raises)
    return ExportReport(out, len(blob), time.perf_counter() - t0, export_seconds, parity, meta)


def _to_onnx(graph: ExportGraph, sample: Batch):
    """torch.export (dynamo) -> ONNX ModelProto with dynamic B, L, N, M."""
    args = tuple(torch.as_tensor(v) for v in feeds(sample).values())
    try:
        with quiet(), torch.no_grad():
            program = torch.onnx.export(graph, args, None, dynamo=True, input_names=list(INPUT_NAMES),
                                        output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic_shapes(),
                                        verbose=False)
    except Exception as e:  # the exporter's own errors are many kinds; name the step that failed
        raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {str(e)[:500]}") from e
    proto = program.model_proto
    # the exporter annotates every node with its Python stack trace (this machine's file paths):
    # three quarters of a small model's bytes, and nothing a runtime reads
    for node in proto.graph.node:
        del node.metadata_props[:]
    return proto


def _name_item_table(proto, table: np.ndarray) -> str:
    """Rename the initializer holding the item table to `item_vectors_t` ([d, V+1]: the exporter
    folds the transpose of the final MatMul into the constant) and return '<name>:<layout>' for the
    metadata. Found by value (bit-exact), so an exporter that names or folds constants otherwise
    fails here instead of writing a file whose table cannot be read back."""
    from onnx import numpy_helper
    found = None
    for layout, want in (("dv", np.ascontiguousarray(table.T)), ("vd", table)):
        for init in proto.graph.initializer:
            if list(init.dims) == list(want.shape) and init.data_type == 1:     # FLOAT
                if np.array_equal(numpy_helper.to_array(init), want):
                    found = (init, layout)
                    break
        if found:
            break
    if found is None:
        raise ExportError("the exported graph holds no constant equal to the item table; cannot name it")
    init, layout = found
    new = TABLE_INITIALIZER if layout == "dv" else "item_vectors"
    _rename(proto.graph, init.name, new)
    init.name = new
    return f"{new}:{layout}"


def _rename(graph, old: str, new: str) -> None:
    """Point every use of value `old` in `graph` (and its subgraphs) at `new`."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename(g, old, new)
    for vi in list(graph.output) + list(graph.value_info):
        if vi.name == old:
            vi.name = new


def _metadata(run: RunDir, lr: LoadedRun, table: str) -> dict[str, str]:
    m = lr.model
    return {"contract_version": CONTRACT_VERSION, "sessrec_version": __version__, "run_id": run.run_id,
            "model": lr.cfg.model, "dataset": lr.cfg.dataset, "n_items": str(m.n_items),
            "hidden": str(m.hidden), "graph_mode": str(m.graph_mode),
            "item_fingerprint": lr.data.items.fingerprint(), "checkpoint": lr.checkpoint.name,
            "checkpoint_mtime_ns": str(lr.checkpoint_stat.st_mtime_ns),
            "checkpoint_size": str(lr.checkpoint_stat.st_size), "epoch": str(lr.epoch),
            "item_table": table}


def ort_session(model: bytes | str | os.PathLike, threads: int | None = None):
    """A CPU ONNX Runtime session (`threads` intra-op threads; None: torch's thread count)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3                      # errors only
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
