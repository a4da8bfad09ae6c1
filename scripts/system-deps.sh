#!/usr/bin/env bash
# Debian packages for cross compiling (aarch64, armv7, riscv64), running foreign binaries under
# qemu-user emulation, and rendering HTML reports in a headless browser. Needs root (or sudo).
# Usage: scripts/system-deps.sh [--demo]   (--demo: only what scripts/demo.sh's main job needs)
set -euo pipefail
if [ "${1:-}" = "--demo" ]; then
  pkgs=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user)
else
  pkgs=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf
        gcc-riscv64-linux-gnu g++-riscv64-linux-gnu qemu-user chromium)
fi
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo"
  else
    echo "system-deps: installing ${missing[*]} needs root; run: sudo apt-get install ${missing[*]}" >&2
    exit 3
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
