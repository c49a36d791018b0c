#!/usr/bin/env bash
# Creates .venv (once) with the pinned CPU build of torch, Triton (its interpreter
# runs the kernels on CPU) and the package in editable mode with its test extra.
# Pinning torch here matters: a bare `pip install torch` pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch, triton" >/dev/null 2>&1; then
  if python -c "import sys; sys.exit(0 if sys.platform.startswith('linux') else 1)"; then
    python -m pip install -q "torch==2.13.0" "triton==3.6.0"
  else
    python -m pip install -q "torch==2.13.0"
  fi
fi
python -m pip install -q -e ".[test]"
