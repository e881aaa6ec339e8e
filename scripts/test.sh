#!/usr/bin/env bash
# The tests: set up, lint, run the suite (Triton kernels run in its CPU interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "${1:-}"
. .venv/bin/activate
ruff check .
python -m pytest -q
