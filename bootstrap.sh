#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine with Python 3.11 (root or sudo):
# apt toolchains, .venv with edgeyard and its dev, torch and executorch extras, and the target-architecture TVM and
# ExecuTorch runtimes.
# A second run checks and skips; it takes seconds.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf 'bootstrap: %s\n' "$*"; }

# Cross compilers and emulators the targets in targets/ need; graphviz draws report.html's model graph;
# chromium (about 100 MB with graphviz) renders the reports in the slow browser test (skipped where it is absent).
APT_PACKAGES=(graphviz chromium g++ g++-aarch64-linux-gnu qemu-user python3-venv gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gdb-multiarch g++-arm-linux-gnueabihf openssh-client openssh-server xz-utils)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing apt packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "apt packages present: ${APT_PACKAGES[*]}"
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.edgeyard-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing edgeyard and its dependencies into .venv (TensorFlow, TVM, LiteRT, ONNX Runtime: a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  # PyTorch's CPU build first: PyPI's default Linux torch is a CUDA build with gigabytes of NVIDIA libraries, and
  # the CPU index's 2.13.0+cpu outranks PyPI's 2.13.0 (a local version). --retries 0: where only PyPI is reachable
  # (a mirror with the CPU wheel among its find-links) the unreachable index costs a second, not minutes.
  .venv/bin/python -m pip install -q --no-deps --retries 0 --timeout 30 \
    --extra-index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" 'torch==2.13.*'
  .venv/bin/python -m pip install -q -e '.[dev,scaleout,torch,executorch]'
  echo "$want" > "$stamp"
else
  say ".venv is up to date with pyproject.toml"
fi

# TVM runtime libraries for the boards' architectures (from the aarch64 wheels on PyPI).
.venv/bin/python -m toolchain.hostenv tvm-runtime aarch64
# ExecuTorch's C++ runtime for them (libraries and headers from the aarch64 executorch wheel, 18 MB, no torch).
.venv/bin/python -m toolchain.hostenv executorch-runtime aarch64
# The emulated Raspberry Pi OS userland (Debian 12 arm64, python3.11, aarch64 wheels) that LiteRT and
# ONNX Runtime bundles run in under qemu, and the qemu plugin that counts instructions per inference.
.venv/bin/python -m toolchain.hostenv userland aarch64
.venv/bin/python -m toolchain.hostenv qemu-plugin
say "done: try .venv/bin/invoke build --target rpi4"
