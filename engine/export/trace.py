"""What every export of a session GNN run shares: the run to export, the traced function, a batch
to trace with, the dynamic dimensions, and the parity check against eager PyTorch.

An export traces `SessionGNN.encode` (and, for ONNX, the full scoring) over the arrays of a
`Batch` (the contract: engine.export.contract) with `torch.export`, B, L, N, M dynamic. It is kept
only when it reproduces PyTorch on a seeded sample of the test split's prefixes plus hand-made edge
cases (an empty session, repeats, one item, a long loop):

    top-10 sets agree on >= `min_top10` of the rows (default 0.99; exact order is reported too), and
    max |export - torch| / max(|torch|, 1) over the finite PyTorch scores <= `max_rel` (default 1e-4),
    with -inf (the padding column) in the same places; `session` and `repeat` are held to the same
    tolerance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from engine.core.errors import InputError
from engine.core.locks import FolderLock
from engine.core.progress import ProgressFn, StageReporter
from engine.core.schema import ModelKind
from engine.core.workspace import RunDir
from engine.data.batches import Batch, BatchBuilder, SessionStore
from engine.data.examples import make_examples
from engine.export.contract import ExportError
from engine.models.checkpoint import LoadedRun
from engine.models.checkpoint import load_run as load_trained

TOP_K = 10
# an export's outputs for a batch: (scores [B, V+1], session [B, d], repeat [B, L]) as torch tensors
Outputs = Callable[[Batch], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class ParityReport:
    rows: int                    # sessions compared
    top10_set_share: float       # rows whose top-10 items are the same set in the export and PyTorch
    top10_order_share: float     # rows whose top-10 lists are identical, in order
    max_rel_error: float         # max |export - torch| / max(|torch|, 1) over finite PyTorch scores
    max_rel_error_encode: float  # the same over the `session` and `repeat` outputs
    seconds: float

    def check(self, what: str, min_top10: float, max_rel: float) -> None:
        """ExportError unless the export met the parity rules (the message says `what` is not written)."""
        if self.top10_set_share < min_top10 or not self.max_rel_error <= max_rel \
                or not self.max_rel_error_encode <= max_rel:
            raise ExportError(f"{what} does not reproduce PyTorch on {self.rows} test sessions (identical "
                              f"top-10: {self.top10_set_share:.2%}, need {min_top10:.0%}; max relative error "
                              f"{self.max_rel_error:.2e} / {self.max_rel_error_encode:.2e}, need <= "
                              f"{max_rel:.0e}); not written")


def load_run(run: RunDir) -> LoadedRun:
    """The run's model from its best checkpoint, else its last, with its dataset (the test split and
    item index). InputError for a baseline / hybrid run or a dataset rebuilt since training."""
    from engine.models.registry import get_spec
    if run.exists:                       # a GNN before anything is loaded (load_run names a missing run)
        spec = get_spec(json.loads(run.config.read_text())["train"]["model"])
        if spec.kind != ModelKind.GNN:
            raise InputError(f"run {run.run_id}: {spec.name} is a {spec.kind}; export is for the session "
                             f"GNNs (graphsage, gat, graph_transformer, graph_transformer_ffn)")
    return load_trained(run)


def as_batch(items, lengths, mask, x, edge_index, edge_weight, batch, alias, last_node) -> Batch:
    """The contract's input arrays (engine.export.contract.INPUTS, in order) as a `Batch`."""
    return Batch(items, lengths, torch.zeros_like(lengths), mask, x, edge_index, edge_weight, batch,
                 alias, last_node)


class EncodeGraph(nn.Module):
    """Batch arrays -> (session, repeat): `SessionGNN.encode`, the per-request work of serving."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    # the contract's argument names: torch.export's dynamic shapes are keyed by them
    def forward(self, items, lengths, mask, x, edge_index, edge_weight, batch, alias, last_node):
        return self.model.encode(as_batch(items, lengths, mask, x, edge_index, edge_weight, batch, alias,
                                          last_node))


class ExportGraph(nn.Module):
    """Batch arrays -> (scores, session, repeat), the item table a constant."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.register_buffer("item_vectors", model.item_table().detach().float().clone())

    def forward(self, items, lengths, mask, x, edge_index, edge_weight, batch, alias, last_node):
        from engine.models.gnn import session_scores
        reps, cells = self.model.encode(as_batch(items, lengths, mask, x, edge_index, edge_weight, batch,
                                                 alias, last_node))
        return session_scores(reps, cells, items, self.item_vectors), reps, cells


def dynamic_shapes() -> dict[str, dict[int, torch.export.Dim]]:
    """The contract's dynamic dimensions (B sessions, L cells, N nodes, M edges) per input."""
    B, L, N, M = (torch.export.Dim(n) for n in ("B", "L", "N", "M"))
    return {"items": {0: B, 1: L}, "lengths": {0: B}, "mask": {0: B, 1: L}, "x": {0: N},
            "edge_index": {1: M}, "edge_weight": {0: M}, "batch": {0: N}, "alias": {0: B, 1: L},
            "last_node": {0: B}}


@dataclass
class Inputs:
    """What an export is traced with and checked on."""
    builder: BatchBuilder        # batches of the run's test split
    examples: np.ndarray         # the test prefixes of the parity check (a seeded sample)
    edge_cases: Batch            # `edge_case_prefixes` as one batch
    sample: Batch                # the batch to trace with


def export_inputs(lr: LoadedRun, parity_limit: int, seed: int = 0, device: str | torch.device = "cpu") -> Inputs:
    """The batches (on `device`, the model's) an export of `lr` is traced with and checked on."""
    if parity_limit < 1:
        raise InputError(f"parity_limit {parity_limit}: every export is checked, on at least 1 session")
    model, data = lr.model, lr.data
    builder = BatchBuilder(SessionStore(data.test, device), data.n_items, model.graph_mode, data.graph)
    examples = make_examples(data.test, "prefixes")
    if len(examples) > parity_limit:
        pick = np.random.default_rng(seed).choice(len(examples), parity_limit, replace=False)
        examples = examples[np.sort(pick)]
    edge_cases = builder.from_prefixes(edge_case_prefixes(data.n_items))
    return Inputs(builder, examples, edge_cases, sample_batch(builder, examples, edge_cases))


def edge_case_prefixes(n_items: int) -> list[list[int]]:
    """An empty session, one item, repeats, and a long session with loops (items wrap around V)."""
    it = lambda i: (i - 1) % n_items + 1          # noqa: E731
    return [[], [it(1)], [it(1), it(2), it(1), it(1), it(3), it(2)], [it(i % 7 + 1) for i in range(40)]]


def sample_batch(builder: BatchBuilder, examples: np.ndarray, edge_cases: Batch) -> Batch:
    """A batch to trace with: every dynamic dim >= 2 (an example size of 0 or 1 would be baked into
    the graph as a constant)."""
    longest = examples[np.argsort(-examples[:, 1], kind="stable")[:16]] if len(examples) else examples
    candidates = ([builder(longest)] if len(longest) else []) + [edge_cases]
    for b in candidates:
        if min(b.items.shape[0], b.items.shape[1], b.x.shape[0], b.edge_index.shape[1]) >= 2:
            return b
    raise ExportError("no sample batch with >= 2 sessions, cells, nodes and edges to trace the model with")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporters' warnings (torchvision ops skipped, deprecations) say nothing to a user here."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._inductor", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max(|ref|, 1) over the finite entries of `ref`; inf when a non-finite
    entry of `ref` is not matched exactly or `out` is NaN there (0.0 for empty tensors)."""
    fin = torch.isfinite(ref)
    if bool((out[~fin] != ref[~fin]).any()):
        return float("inf")
    err = ((out - ref).abs() / ref.abs().clamp(min=1.0))[fin]
    if bool(err.isnan().any()):
        return float("inf")
    return float(err.max()) if err.numel() else 0.0


@torch.no_grad()
def check_parity(model, outputs: Outputs, inputs: Inputs, *, batch_size: int = 256,
                 progress: ProgressFn | None = None) -> ParityReport:
    """An export's `outputs` against PyTorch on the test prefixes and the edge-case batch."""
    t0 = time.perf_counter()
    ex = inputs.examples
    batches = [inputs.builder(ex[i:i + batch_size]) for i in range(0, len(ex), batch_size)]
    rep = StageReporter("parity", progress, total=len(batches) + 1, unit="batches")
    rows = same_set = same_order = 0
    err = err_enc = 0.0
    for b in [inputs.edge_cases, *batches]:
        ref = model.score(b)
        reps, cells = model.encode(b)
        scores, session, repeat = outputs(b)
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


# ---- a run's own exports ---------------------------------------------------------------------------
def ensure_fresh(run: RunDir, path: Path, metadata: Callable[[Path], dict[str, Any]],
                 build: Callable[[], Path]) -> Path:
    """`path` (one of the run's exports), built with `build()` unless it exists and `metadata(path)`
    says it was made from the checkpoint the run serves now (name, mtime, size)."""
    if _fresh(run, path, metadata):
        return path
    # two processes serving one run (the app's server and a shell's) would both build it; the
    # second waits for the first and then finds its export fresh
    path.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(path.with_name(path.name + ".lock"), f"run {run.run_id} is being exported by {{who}}",
                    what="export lock").acquire(timeout=600):
        if _fresh(run, path, metadata):
            return path
        return build()


def _fresh(run: RunDir, path: Path, metadata: Callable[[Path], dict[str, Any]]) -> bool:
    if not path.exists():
        return False
    ckpt = run.served_checkpoint()
    try:
        meta = metadata(path)
        st = ckpt.stat()
    except (InputError, OSError):
        return False
    return (meta.get("checkpoint") == ckpt.name and meta.get("checkpoint_mtime_ns") == str(st.st_mtime_ns)
            and meta.get("checkpoint_size") == str(st.st_size))
