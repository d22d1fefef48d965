#!/usr/bin/env bash
# Prepares a Debian 12 machine to build Mirror and configures the build directory (default
# `build`). Installs only what is missing, so running it again is cheap. The CUDA backend is
# built when nvcc is found (on PATH or in /usr/local/cuda/bin); a CUDA build still runs, and falls
# back to the CPU, on a machine without a GPU.
set -euo pipefail

build_dir="${1:-build}"
cd "$(dirname "$0")/.."

packages=(g++ pkg-config meson ninja-build libdnnl-dev zlib1g-dev libgtest-dev libbenchmark-dev dataset-fashion-mnist
          libhdf5-dev libzip-dev nlohmann-json3-dev python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

if [ ! -f "$build_dir/build.ninja" ]; then
  meson setup "$build_dir" "${@:2}"
fi
