#!/usr/bin/env bash
# Downloads, on a machine with Debian's package registry, the .deb files that tests/device/check.sh
# unpacks on the GPU machine (which reaches no registry): the build dependencies' headers and
# pkg-config/CMake files, the shared libraries they need at run time (with their own dependencies),
# Fashion-MNIST, and fallbacks for the build tools. They go to .deps/debs (git-ignored); pass that
# folder along with the working tree (e.g. carry ".deps/debs"), never the unpacked .deps/prefix.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/.deps/debs"
mkdir -p "$dest"

# Headers, link-time .so files and pkg-config/CMake files only: fetched without their dependencies
# (libhdf5-dev's would bring Fortran, libcurl's and OpenSSL's headers, none of which Mirror uses).
build_packages=(
  libdnnl-dev                     # oneDNN 2.x: the host backend
  libhdf5-dev                     # HDF5 (serial): .weights.h5 files
  libzip-dev                      # .keras archives
  nlohmann-json3-dev              # JSON (header-only)
  libcli11-dev                    # train_cnn's command line (header-only)
  libgtest-dev                    # GoogleTest (static libraries, headers, .pc files)
  libbenchmark-dev                # Google Benchmark
  zlib1g-dev                      # zlib headers
  dataset-fashion-mnist           # the reference data set
  # Build tools, used by check.sh only when the system has none that work:
  pkgconf pkgconf-bin libpkgconf3 # pkg-config (Meson finds most dependencies through it)
  meson ninja-build               # Meson 1.0.1 and ninja
)
# The shared libraries the programs load, with every library they depend on in turn. check.sh
# unpacks one only where the system lacks a library of its package, so a system that has them
# keeps its own (the same or newer, and compatible).
runtime_roots=(libdnnl2 libhdf5-103-1 libzip4 libbenchmark1debian libgomp1 zlib1g libpkgconf3)
# Every system has these, and a copy from elsewhere must never shadow its C and C++ runtimes.
system_packages=" libc6 libgcc-s1 libstdc++6 gcc-12-base debconf "

runtime_closure() {
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${runtime_roots[@]}" | grep -E '^[a-z0-9]' | sort -u |
    while read -r package; do [[ $system_packages == *" $package "* ]] || echo "$package"; done
}

download() {
  local runtime_packages
  mapfile -t runtime_packages < <(runtime_closure)
  (( ${#runtime_packages[@]} )) || return 1
  apt-get download "${build_packages[@]}" "${runtime_packages[@]}"
}

cd "$dest"
if ! download; then
  echo "fetch_debs.sh: apt-get download failed; refreshing the package lists and trying again" >&2
  apt-get update
  download
fi
echo "fetch_debs.sh: $(ls -1 "$dest"/*.deb | wc -l) packages, $(du -sh "$dest" | cut -f1) in $dest"
