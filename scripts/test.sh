#!/usr/bin/env bash
# Command (2) of the README: set up, lint, check notebooks carry no outputs, run the tests
# (helpers + every notebook executed on CPU with the embedded default, in fast mode).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
export VH_FAST=${VH_FAST:-1}
export VH_FIGURES=${VH_FIGURES:-$PWD/build/test-figures}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The browser test (tests/test_widgets_browser.py) drives Debian's chromium through Playwright's Python
# package (dev extra); install chromium if missing (never `playwright install`, which downloads browsers).
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ] && [ -z "${VH_CHROMIUM:-}" ]; then
    echo "== installing chromium (apt-get)"
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q chromium >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; } \
        || echo "chromium could not be installed: tests/test_widgets_browser.py will fail (set VH_CHROMIUM)"
fi
echo "== ruff"
ruff check helpers tests benchmarks notebooks scripts
echo "== notebooks carry no outputs, and their prose types no numbers"
python -m helpers.notebooks --check-stripped
python -m helpers.notebooks --check-prose
echo "== pytest"
python -m pytest -q -p no:cacheprovider --durations=15 tests --nbmake notebooks "$@"
