#!/usr/bin/env bash
# Debian packages for cross compiling (aarch64, armv7, riscv64), running foreign binaries under
# qemu-user emulation, and rendering HTML reports in a headless browser. Needs root (or sudo).
set -euo pipefail
pkgs=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf
      gcc-riscv64-linux-gnu g++-riscv64-linux-gnu qemu-user chromium)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
