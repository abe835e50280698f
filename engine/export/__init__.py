"""Exports of trained runs for serving: ONNX, and the encoder compiled ahead of time.

    contract.py      the exported inputs, outputs, metadata keys and item-index check (no onnx import)
    trace.py         what every export shares: the traced wrapper, dynamic shapes, the parity check,
                     `ensure_fresh` (a run's own export, rebuilt when its checkpoint changed)
    onnx.py          `export_onnx(run, out)`: a SessionGNN run -> one .onnx file, parity-checked
    onnx_runtime.py  `OnnxEncoder(path)`: encode / score with ONNX Runtime; `ensure_run_onnx(run)`
    compiled.py      `compile_encoder(run, out)`: the encoder compiled by AOTInductor (.pt2), parity-
                     checked; `CompiledEncoder(path, model)`; `ensure_run_compiled(run)`

The onnx / onnxruntime / onnxscript packages are imported by those modules only (never by `engine`).
"""
