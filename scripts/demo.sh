#!/usr/bin/env bash
# Set up, then the three things prunec is for, on models built from a config (random weights):
#   1. inspect and prune a small LLaMA-architecture model,
#   2. compile a pruned ResNet-style CNN for a Raspberry Pi 4 (aarch64, TVM, cross-compiled) and
#      verify the binary against PyTorch under qemu-user emulation,
#   3. show what pruning changed (text diff summary + an HTML report).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The main job cross-compiles for aarch64 and verifies under qemu-user: install them (root or sudo).
scripts/system-deps.sh --demo || echo "(the rpi4 step below falls back to ONNX Runtime on this machine)" >&2
prunec="${PRUNEC_VENV:-.venv}/bin/prunec"
"$prunec" inspect demo-llama
rm -rf out/demo-llama out/demo-resnet-rpi4
"$prunec" prune demo-llama --ratio 0.3 -o out/demo-llama
if command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null; then
  "$prunec" compile demo-resnet --target rpi4 --backend tvm --ratio 0.3 --repeat 3 -o out/demo-resnet-rpi4
else
  echo "(no aarch64 cross compiler / qemu-user: 'sudo scripts/system-deps.sh --demo' installs them; compiling with ONNX Runtime instead)"
  "$prunec" compile demo-resnet --target rpi4 --backend onnx --ratio 0.3 -o out/demo-resnet-rpi4
fi
"$prunec" diff demo-llama out/demo-llama --summary --html out/demo-llama/diff.html
