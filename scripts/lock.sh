#!/usr/bin/env bash
# Regenerate requirements/ci.txt: install the newest releases into a scratch venv, freeze them.
# Run the full suite on the result (scripts/test.sh --full) before committing the new lock.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
PRUNEC_VENV="$scratch/venv" scripts/setup.sh --models --latest
head -4 requirements/ci.txt > "$scratch/ci.txt"
"$scratch/venv/bin/python" -m pip freeze --exclude-editable | grep -v '^prunec' \
  | sed -E 's/^(torch==[^+]+)\+cpu$/\1/' >> "$scratch/ci.txt"
diff -u requirements/ci.txt "$scratch/ci.txt" || true
mv "$scratch/ci.txt" requirements/ci.txt
