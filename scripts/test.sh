#!/usr/bin/env bash
# Command (2) of the README: set up, lint, check notebooks carry no outputs, run the tests
# (helpers + every notebook executed on CPU with the embedded default, in fast mode).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
export VH_FAST=${VH_FAST:-1}
export VH_FIGURES=${VH_FIGURES:-$PWD/build/test-figures}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "== ruff"
ruff check helpers tests benchmarks notebooks scripts
echo "== notebooks carry no outputs"
python -m helpers.notebooks --check-stripped
echo "== pytest"
python -m pytest -q -p no:cacheprovider tests --nbmake notebooks "$@"
