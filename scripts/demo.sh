#!/usr/bin/env bash
# The main job: set up (with the real MiniLM) and run `fxc demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh real
. .venv/bin/activate
fxc demo "$@"
