#!/usr/bin/env bash
# Set up, then trace, analyse and prune a small LLaMA-architecture model built from a config.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
prunec="${PRUNEC_VENV:-.venv}/bin/prunec"
"$prunec" inspect demo-llama
rm -rf out/demo-llama
"$prunec" prune demo-llama --ratio 0.3 -o out/demo-llama
