#!/usr/bin/env bash
# Prepares a Debian 12 machine to build Mirror and configures the build directory (default
# `build`). Installs only what is missing, so running it again is cheap. The CUDA backend is
# built when nvcc is found (on PATH or in /usr/local/cuda/bin); a CUDA build still runs, and falls
# back to the CPU, on a machine without a GPU.
set -euo pipefail

build_dir="${1:-build}"
cd "$(dirname "$0")/.."

packages=(g++ pkg-config meson ninja-build libdnnl-dev zlib1g-dev libgtest-dev libbenchmark-dev libcli11-dev dataset-fashion-mnist
          libhdf5-dev libzip-dev nlohmann-json3-dev python3-venv cmake openmpi-bin libopenmpi-dev patchelf)
scripts/install_debs.sh "${packages[@]}"

if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

if [ ! -f "$build_dir/build.ninja" ]; then
  meson setup "$build_dir" "${@:2}"
fi
