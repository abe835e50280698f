#!/usr/bin/env bash
# Create .venv (if missing) and install sessrec into it, with torch first.
#
# torch: without a GPU we install the CPU build (`torch==2.13.0`; on the sessrec dev machines that
# file lies on disk). On a GPU box (nvidia-smi answers) we install the CUDA build from PyPI.
# Override either with TORCH_SPEC (pip requirement) and TORCH_INDEX_URL (extra index), e.g.
#   TORCH_SPEC="torch==2.13.0" TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 make run
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-test}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    spec=$TORCH_SPEC
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec="torch"            # PyPI's Linux wheel is the CUDA build
  else
    spec="torch==2.13.0"    # CPU build (on disk here; elsewhere add TORCH_INDEX_URL=.../whl/cpu)
  fi
  echo "installing $spec into $VENV"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install -q "$spec" --extra-index-url "$TORCH_INDEX_URL"
  else
    "$PY" -m pip install -q "$spec"
  fi
fi

echo "installing sessrec[$EXTRAS] into $VENV"
"$PY" -m pip install -q -e ".[$EXTRAS]"
