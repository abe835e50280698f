"""ONNX export of a trained session GNN run, checked against PyTorch before it is written.

    report = export_onnx(ws.run("gt-1"), Path("gt.onnx"))     # ExportReport: path, sizes, parity

The model (eval mode, best checkpoint else last) is wrapped so that the graph takes the `Batch`
arrays and returns `scores`, `session` and `repeat` (the contract: engine.export.contract). The item
table is computed once here and stored as a constant (not re-normalised per call). Parity: a seeded
sample of the test split's prefixes (plus hand-made edge cases: an empty session, repeats, one item)
is scored by ONNX Runtime and by PyTorch; the export is refused (ExportError, no file) unless

    top-10 sets agree on >= `min_top10` of the rows (default 0.99; exact order is reported too), and
    max |onnx - torch| / max(|torch|, 1) over the finite PyTorch scores <= `max_rel` (default 1e-4),
    with -inf (the padding column) in the same places; `session` and `repeat` are held to the same
    tolerance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from engine import __version__
from engine.atomic import write_bytes
from engine.data.examples import make_examples
from engine.errors import InputError
from engine.export.contract import (CONTRACT_VERSION, INPUT_NAMES, OUTPUT_NAMES, TABLE_INITIALIZER,
                                    ExportError, feeds)
from engine.progress import ProgressFn, StageReporter
from engine.schema import ModelKind
from engine.train.batches import Batch, BatchBuilder, SessionStore
from engine.train.checkpoint import LoadedRun, load_run as load_trained
from engine.workspace import RunDir

TOP_K = 10


@dataclass
class ParityReport:
    rows: int                    # sessions compared
    top10_set_share: float       # rows whose top-10 items are the same set in ONNX and PyTorch
    top10_order_share: float     # rows whose top-10 lists are identical, in order
    max_rel_error: float         # max |onnx - torch| / max(|torch|, 1) over finite PyTorch scores
    max_rel_error_encode: float  # the same over the `session` and `repeat` outputs
    seconds: float


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


def load_run(run: RunDir) -> LoadedRun:
    """The run's model from its best checkpoint, else its last, with its dataset (the test split and
    item index). InputError for a baseline / hybrid run or a dataset rebuilt since training."""
    from engine.models.registry import get_spec
    if run.exists:                       # a GNN before anything is loaded (load_run names a missing run)
        spec = get_spec(json.loads(run.config.read_text())["train"]["model"])
        if spec.kind != ModelKind.GNN:
            raise InputError(f"run {run.run_id}: {spec.name} is a {spec.kind}; ONNX export is for the session "
                             f"GNNs (graphsage, gat, graph_transformer, graph_transformer_ffn)")
    return load_trained(run)


class ExportGraph(nn.Module):
    """The exported function: Batch arrays -> (scores, session, repeat), the item table a constant."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.register_buffer("item_vectors", model.item_table().detach().float().clone())

    def forward(self, items, lengths, mask, x, edge_index, edge_weight, batch, alias, last_node):
        from engine.models.gnn import session_scores
        b = Batch(items, lengths, torch.zeros_like(lengths), mask, x, edge_index, edge_weight, batch,
                  alias, last_node)
        reps, cells = self.model.encode(b)
        return session_scores(reps, cells, items, self.item_vectors), reps, cells


# ---- export ----------------------------------------------------------------------------------------
def export_onnx(run: RunDir, out: Path, *, parity_limit: int = 2000, seed: int = 0, batch_size: int = 256,
                min_top10: float = 0.99, max_rel: float = 1e-4,
                progress: ProgressFn | None = None) -> ExportReport:
    """Export `run` to `out` (written atomically, only after the parity check passed)."""
    if parity_limit < 1:
        raise InputError(f"parity_limit {parity_limit}: every export is checked, on at least 1 session")
    t0 = time.perf_counter()
    out = Path(out)
    lr = load_run(run)
    model, data = lr.model, lr.data
    builder = BatchBuilder(SessionStore(data.test), data.n_items, model.graph_mode, data.graph)
    examples = make_examples(data.test, "prefixes")
    if len(examples) > parity_limit:
        pick = np.random.default_rng(seed).choice(len(examples), parity_limit, replace=False)
        examples = examples[np.sort(pick)]
    edge_cases = builder.from_prefixes(_edge_case_prefixes(data.n_items))

    t1 = time.perf_counter()
    graph = ExportGraph(model).eval()
    sample = _sample_batch(builder, examples, edge_cases)
    proto = _to_onnx(graph, sample)
    table_name = _name_item_table(proto, graph.item_vectors.numpy())
    meta = _metadata(run, lr, table_name)
    import onnx
    onnx.helper.set_model_props(proto, meta)
    try:
        blob = proto.SerializeToString()
    except ValueError as e:       # protobuf's 2 GB limit
        raise ExportError(f"run {run.run_id}: the ONNX model is larger than 2 GB ({e}); not supported") from e
    export_seconds = time.perf_counter() - t1

    parity = check_parity(model, blob, builder, examples, edge_cases, batch_size=batch_size,
                          progress=progress)
    if parity.top10_set_share < min_top10 or not parity.max_rel_error <= max_rel \
            or not parity.max_rel_error_encode <= max_rel:
        raise ExportError(f"run {run.run_id}: the ONNX model does not reproduce PyTorch on {parity.rows} test "
                          f"sessions (identical top-10: {parity.top10_set_share:.2%}, need {min_top10:.0%}; "
                          f"max relative error {parity.max_rel_error:.2e} / {parity.max_rel_error_encode:.2e}, "
                          f"need <= {max_rel:.0e}); {out} not written")
    write_bytes(out, blob, "ONNX model")
    return ExportReport(out, len(blob), time.perf_counter() - t0, export_seconds, parity, meta)


def _edge_case_prefixes(n_items: int) -> list[list[int]]:
    """An empty session, one item, repeats, and a long session with loops (items wrap around V)."""
    it = lambda i: (i - 1) % n_items + 1          # noqa: E731
    return [[], [it(1)], [it(1), it(2), it(1), it(1), it(3), it(2)], [it(i % 7 + 1) for i in range(40)]]


def _sample_batch(builder: BatchBuilder, examples: np.ndarray, edge_cases: Batch) -> Batch:
    """A batch to trace with: every dynamic dim >= 2 (an example size of 0 or 1 would be baked into
    the graph as a constant)."""
    longest = examples[np.argsort(-examples[:, 1], kind="stable")[:16]] if len(examples) else examples
    candidates = ([builder(longest)] if len(longest) else []) + [edge_cases]
    for b in candidates:
        if min(b.items.shape[0], b.items.shape[1], b.x.shape[0], b.edge_index.shape[1]) >= 2:
            return b
    raise ExportError("no sample batch with >= 2 sessions, cells, nodes and edges to trace the model with")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's warnings (torchvision ops it skips, deprecations) say nothing to a user here."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _to_onnx(graph: ExportGraph, sample: Batch):
    """torch.export (dynamo) -> ONNX ModelProto with dynamic B, L, N, M."""
    B, L, N, M = (torch.export.Dim(n) for n in ("B", "L", "N", "M"))
    shapes = {"items": {0: B, 1: L}, "lengths": {0: B}, "mask": {0: B, 1: L}, "x": {0: N},
              "edge_index": {1: M}, "edge_weight": {0: M}, "batch": {0: N}, "alias": {0: B, 1: L},
              "last_node": {0: B}}
    args = tuple(torch.as_tensor(v) for v in feeds(sample).values())
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(graph, args, None, dynamo=True, input_names=list(INPUT_NAMES),
                                        output_names=list(OUTPUT_NAMES), dynamic_shapes=shapes,
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


# ---- parity ----------------------------------------------------------------------------------------
def ort_session(model: bytes | str | os.PathLike, threads: int | None = None):
    """A CPU ONNX Runtime session (`threads` intra-op threads; None: torch's thread count)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3                      # errors only
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def rel_error(onnx_out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |onnx - ref| / max(|ref|, 1) over the finite entries of `ref`; inf when a non-finite
    entry of `ref` is not matched exactly or the ONNX value is NaN (0.0 for empty tensors)."""
    fin = torch.isfinite(ref)
    if bool((onnx_out[~fin] != ref[~fin]).any()):
        return float("inf")
    err = ((onnx_out - ref).abs() / ref.abs().clamp(min=1.0))[fin]
    if bool(err.isnan().any()):
        return float("inf")
    return float(err.max()) if err.numel() else 0.0


@torch.no_grad()
def check_parity(model, blob: bytes, builder: BatchBuilder, examples: np.ndarray, edge_cases: Batch, *,
                 batch_size: int = 256, progress: ProgressFn | None = None) -> ParityReport:
    """ONNX Runtime against PyTorch on `examples` (test prefixes) and the `edge_cases` batch."""
    t0 = time.perf_counter()
    sess = ort_session(blob)
    batches = [builder(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]
    rep = StageReporter("parity", progress, total=len(batches) + 1, unit="batches")
    rows = same_set = same_order = 0
    err = err_enc = 0.0
    for b in [edge_cases, *batches]:
        ref = model.score(b)
        reps, cells = model.encode(b)
        scores, session, repeat = (torch.from_numpy(a) for a in sess.run(list(OUTPUT_NAMES), feeds(b)))
        err = max(err, rel_error(scores, ref))
        err_enc = max(err_enc, rel_error(session, reps), rel_error(repeat, cells))
        k = min(TOP_K, ref.shape[1] - 1)
        t_top = torch.topk(ref, k, dim=1).indices
        o_top = torch.topk(scores, k, dim=1).indices
        same_order += int((t_top == o_top).all(1).sum())
        same_set += int((t_top.sort(1).values == o_top.sort(1).values).all(1).sum())
        rows += b.size
        rep.step(f"{rows:,} sessions")
    return ParityReport(rows, same_set / rows, same_order / rows, err, err_enc, time.perf_counter() - t0)
