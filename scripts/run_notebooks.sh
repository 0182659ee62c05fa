#!/usr/bin/env bash
# Command (1) of the README: set up, then execute every notebook top to bottom.
# Executed notebooks go to build/notebooks/, figures (PNG and PDF) to build/figures/.
# With no CUDA GPU the notebooks use the embedded default models and data in data/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
export VH_FIGURES=${VH_FIGURES:-$PWD/build/figures}
python -m helpers.notebooks --out build/notebooks "$@"
echo "executed notebooks: build/notebooks/   figures: $VH_FIGURES"
