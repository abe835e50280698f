"""A run's session encoder compiled ahead of time with AOTInductor: PyTorch's fast serving runtime.

    enc = CompiledEncoder(ensure_run_compiled(run), model)   # the run's own package, re-made when stale
    reps, cells = enc.encode(batch)                          # = SessionGNN.encode

`torch.export` traces `SessionGNN.encode` over the contract's `Batch` arrays (engine.export.contract;
B, L, N, M dynamic) and AOTInductor compiles the graph into a shared library inside a .pt2 package.
A request then runs a few fused C++ kernels instead of ~250 eager operator calls: one session,
hidden 256, one thread on the 2-core dev CPU, 0.6 ms against 2.5-3 ms eager and 0.85 ms in ONNX
Runtime. Building needs a C++ compiler (g++, or the one `$CXX` names) and takes ~40 s there, once per
checkpoint and device: the package is checked against eager PyTorch with the parity rules of
engine.export.trace before it is kept, and a sidecar `<package>.json` names the checkpoint, item
index and device it was built for. The item table for scoring stays in the PyTorch model.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine import __version__
from engine.core.atomic import write_json
from engine.core.errors import InputError
from engine.core.progress import ProgressFn
from engine.core.workspace import RunDir
from engine.export.contract import ExportError, check_fingerprint, feeds
from engine.export.trace import (
    EncodeGraph,
    ParityReport,
    check_parity,
    dynamic_shapes,
    ensure_fresh,
    export_inputs,
    load_run,
    quiet,
)

FORMAT = "sessrec-aoti-1"     # the sidecar's `format`: what this module writes and reads


@dataclass
class CompileReport:
    path: Path
    size_bytes: int
    seconds: float               # the whole build: load, trace, compile, parity, write
    compile_seconds: float       # torch.export and AOTInductor
    parity: ParityReport
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of a compiled package; InputError when either file is missing, foreign, or the
    package is not the one the sidecar was written for (size and mtime differ)."""
    path = Path(path)
    side = sidecar(path)
    try:
        meta = json.loads(side.read_text())
        st = path.stat()
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a compiled sessrec encoder with its {side.name} "
                         f"({type(e).__name__}: {e}); build it with sessrec export RUN --compiled") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{side}: not a sessrec compiled-encoder record of format {FORMAT}")
    if meta.get("package_size") != st.st_size or meta.get("package_mtime_ns") != st.st_mtime_ns:
        raise InputError(f"{path}: the package changed after {side.name} was written; rebuild it")
    return meta


def compile_encoder(run: RunDir, out: Path, *, device: str = "cpu", parity_limit: int = 2000, seed: int = 0,
                    batch_size: int = 256, min_top10: float = 0.99, max_rel: float = 1e-4,
                    progress: ProgressFn | None = None) -> CompileReport:
    """Compile `run`'s encoder for `device` into `out` (a .pt2 package; written with its sidecar
    only after the parity check passed, nothing left behind otherwise)."""
    from engine.models.gnn import session_scores
    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix != ".pt2":
        raise InputError(f"{out}: a compiled encoder is a .pt2 package; name the file *.pt2")
    lr = load_run(run)
    dev = torch.device(device)
    model = lr.model.to(dev).eval()
    inputs = export_inputs(lr, parity_limit, seed, device=dev)
    args = tuple(torch.as_tensor(v, device=dev) for v in feeds(inputs.sample).values())
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".compile-", dir=out.parent) as tmp:
        t1 = time.perf_counter()
        package = _compile(EncodeGraph(model).eval(), args, Path(tmp) / out.name, run)
        compile_seconds = time.perf_counter() - t1
        enc = CompiledEncoder(package, model, device=dev, check=False)
        def outputs(b):
            reps, cells = enc.encode(b)
            return session_scores(reps, cells, b.items, enc.item_table()), reps, cells
        with torch.no_grad():
            parity = check_parity(model, outputs, inputs, batch_size=batch_size, progress=progress)
        parity.check(f"run {run.run_id}: the compiled encoder ({out})", min_top10, max_rel)
        meta = {"format": FORMAT, "sessrec_version": __version__, "torch": torch.__version__,
                "run_id": run.run_id, "model": lr.cfg.model, "dataset": lr.cfg.dataset,
                "n_items": lr.model.n_items, "hidden": lr.model.hidden, "device": dev.type,
                "item_fingerprint": lr.data.items.fingerprint(), "checkpoint": lr.checkpoint.name,
                "checkpoint_mtime_ns": str(lr.checkpoint_stat.st_mtime_ns),
                "checkpoint_size": str(lr.checkpoint_stat.st_size), "epoch": lr.epoch,
                "parity": asdict(parity)}
        # the package, then its sidecar: a crash between them leaves a package whose sidecar does
        # not name it (read_metadata refuses it, ensure_run_compiled rebuilds); the old sidecar goes
        # first so that it never names the new package
        sidecar(out).unlink(missing_ok=True)
        os.replace(package, out)
        st = out.stat()
        meta.update(package_size=st.st_size, package_mtime_ns=st.st_mtime_ns)
        write_json(sidecar(out), meta, "compiled encoder record")
    return CompileReport(out, st.st_size, time.perf_counter() - t0, compile_seconds, parity, meta)


def _compile(graph: EncodeGraph, args: tuple[torch.Tensor, ...], package: Path, run: RunDir) -> Path:
    """torch.export, then AOTInductor into `package`; ExportError naming the step that failed."""
    try:
        with quiet(), torch.no_grad():
            program = torch.export.export(graph, args, dynamic_shapes=dynamic_shapes())
    except Exception as e:  # the exporter's own errors are many kinds
        raise ExportError(f"run {run.run_id}: torch.export failed: {type(e).__name__}: {str(e)[:500]}") from e
    try:
        with quiet():
            # single-threaded kernels: the code generator would otherwise bake this process's thread
            # count into every kernel, and a server runs one thread per worker (one session's encoder
            # is too small to split; concurrency comes from batching and workers)
            return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(package),
                                                                 inductor_configs={"cpp.threads": 1}))
    except Exception as e:
        cxx = os.environ.get("CXX", "g++")
        raise ExportError(f"run {run.run_id}: AOTInductor could not compile the encoder "
                          f"({type(e).__name__}: {str(e)[:400]}); it needs a working C++ compiler "
                          f"({cxx}: install it or set CXX), or serve with --runtime torch or onnx") from e


class CompiledEncoder:
    """A compiled encoder: `encode` (session vectors, repeat cells) and the model's item table."""

    def __init__(self, path: str | os.PathLike, model: Any, device: torch.device | str = "cpu",
                 check: bool = True) -> None:
        self.path = Path(path)
        self.device = torch.device(device)
        self.metadata = read_metadata(self.path) if check else {}
        if check and self.metadata.get("device") != self.device.type:
            raise InputError(f"{self.path}: compiled for {self.metadata.get('device')}, not {self.device.type}")
        try:
            self._runner = torch._inductor.aoti_load_package(str(self.path))
        except Exception as e:     # a truncated or foreign package
            raise InputError(f"{self.path}: cannot load the compiled encoder ({type(e).__name__}: {e})") from e
        self.hidden = model.hidden
        self.graph_mode = model.graph_mode
        with torch.no_grad():
            self._table = model.eval().item_table().detach().float()

    def item_table(self) -> torch.Tensor:
        """float32 [V+1, d]: the model's scoring vectors (row 0 = padding)."""
        return self._table

    def encode(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(session vectors float32 [B, d], repeat logit per prefix cell float32 [B, L]) of a `Batch`
        built for this model's graph mode: the same contract as `SessionGNN.encode`."""
        args = [torch.as_tensor(v, device=self.device) for v in feeds(batch).values()]
        reps, cells = self._runner(*args)
        return reps, cells

    def check_items(self, items: Any) -> None:
        """InputError unless this package was built for item index `items` (an `ItemIndex`)."""
        check_fingerprint(self.metadata, items, self.path)


def ensure_run_compiled(run: RunDir, device: str = "cpu", *, parity_limit: int = 2000) -> Path:
    """`<run>/export/encoder-<device>.pt2`, compiled (with its parity check) when it is missing,
    unreadable, or was built from another checkpoint than the one the run serves now."""
    path = run.compiled(torch.device(device).type)
    return ensure_fresh(run, path, read_metadata,
                        lambda: compile_encoder(run, path, device=device, parity_limit=parity_limit).path)
