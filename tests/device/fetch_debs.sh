#!/usr/bin/env bash
# Downloads, on a machine with Debian's package registry, the .deb files that tests/device/check.sh
# unpacks on the GPU machine (which reaches no registry): oneDNN, GoogleTest, Google Benchmark,
# zlib's headers, Fashion-MNIST, and fallbacks for runtime libraries and the build tools. They go
# to .deps/debs (git-ignored); pass that folder along with the working tree (e.g. carry
# ".deps/debs"), never the unpacked .deps/prefix.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/.deps/debs"
mkdir -p "$dest"

packages=(
  libdnnl-dev libdnnl2            # oneDNN 2.x: the host backend
  libgtest-dev                    # GoogleTest (static libraries, headers, .pc files)
  libbenchmark-dev libbenchmark1debian
  zlib1g-dev                      # zlib headers; the runtime is on every system
  dataset-fashion-mnist           # the reference data set
  # Unpacked by check.sh only when the system lacks them:
  libgomp1 ocl-icd-libopencl1 zlib1g
  meson ninja-build               # Meson 1.0.1 and ninja, if the machine has none that work
)

cd "$dest"
if ! apt-get download "${packages[@]}"; then
  echo "fetch_debs.sh: apt-get download failed; refreshing the package lists and trying again" >&2
  apt-get update
  apt-get download "${packages[@]}"
fi
echo "fetch_debs.sh: $(ls -1 "$dest"/*.deb | wc -l) packages, $(du -sh "$dest" | cut -f1) in $dest"
