#!/usr/bin/env bash
# The one-shot GPU benchmark (benchmarks/gpu.py) as one command on a CUDA machine, H100/H200 class:
#
#     bash benchmarks/gpu.sh                 # writes benchmarks/results/gpu-<date>-<gpu>.md and .json
#
# Uses the current Python if it already has a CUDA torch, transformers, bitsandbytes and accelerate;
# otherwise makes .venv-gpu and installs the project from the package registry (torch's default
# wheel from PyPI is a CUDA build). Random-weight models are built offline on the GPU; no hub access.
# The benchmark is stopped after VH_GPU_TIMEOUT seconds (default 470); what it measured by then is in
# the output file, which is written section by section. Extra arguments go to benchmarks/gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, transformers, bitsandbytes, accelerate, helpers; assert torch.cuda.is_available()" 2>/dev/null; then
    echo "installing into .venv-gpu (torch, transformers, bitsandbytes, accelerate from the package registry)"
    "$PY" -m venv .venv-gpu
    PY=.venv-gpu/bin/python
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -e .
fi
exec timeout --signal=INT "${VH_GPU_TIMEOUT:-470}" "$PY" benchmarks/gpu.py \
    --cache "${VH_BENCH_CACHE:-${TMPDIR:-/tmp}/vh-gpu-bench}" "$@"
