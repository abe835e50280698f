"""Exports of trained runs for serving outside PyTorch.

    contract.py      the ONNX file's inputs, outputs, metadata keys and item-index check (no onnx import)
    onnx.py          `export_onnx(run, out)`: a SessionGNN run -> one .onnx file, parity-checked
    onnx_runtime.py  `OnnxEncoder(path)`: encode / score with ONNX Runtime; `ensure_run_onnx(run)`

The onnx / onnxruntime / onnxscript packages are imported by those modules only (never by `engine`).
"""
