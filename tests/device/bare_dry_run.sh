#!/usr/bin/env bash
# tests/device/check.sh on a stand-in for the GPU machine, without a GPU: a minimal Debian 12 root
# with what that machine has (g++, Python 3 with pip's meson, ninja and CMake, the CUDA toolkit at
# /usr/local/cuda) and no -dev package, so the check must bring every build dependency itself.
# Runs the check until the build, then on through every step; passes when only the steps that need
# a GPU fail. Needs root (debootstrap, chroot, mount) and Debian's package mirror and PyPI.
#
#   tests/device/bare_dry_run.sh
#
# CUDA_HOME (default /usr/local/cuda): the toolkit shown at /usr/local/cuda. CHECK_LIMIT_FACTOR
# (default 4): multiplies the check's time limits, which are the GPU machine's (16 idle cores).
#
# The root is cached in .deps/bare-root (git-ignored), so a second run skips making it; the tree is
# copied in afresh each run, the stand-in's build folder kept. Logs: .deps/bare-root/check-out.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="$root/.deps/bare-root"
rootfs="$cache/rootfs"
cuda_home=$(readlink -f "${CUDA_HOME:-/usr/local/cuda}")
mirror=http://deb.debian.org/debian
[[ -x $cuda_home/bin/nvcc ]] || { echo "bare_dry_run.sh: no nvcc in $cuda_home/bin: set CUDA_HOME" >&2; exit 1; }
(( EUID == 0 )) || { echo "bare_dry_run.sh: run as root (debootstrap, chroot and mount need it)" >&2; exit 1; }

mounts=()
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[$i]}" || umount -l "${mounts[$i]}"; done
  mounts=()
}
trap cleanup EXIT

# ---- the root: Debian 12, minbase, a compiler and Python; pip's build tools ----
make_root() {
  command -v debootstrap >/dev/null || apt-get install -y debootstrap || {
    apt-get update && apt-get install -y debootstrap
  }
  rm -rf "$rootfs.partial"
  mkdir -p "$cache"
  debootstrap --variant=minbase --include=g++,python3,python3-pip bookworm "$rootfs.partial" "$mirror"
  local pip_in_root=(chroot "$rootfs.partial" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root
    pip --quiet)
  mount -t proc proc "$rootfs.partial/proc" && mounts+=("$rootfs.partial/proc")
  mkdir -p "$rootfs.partial/tmp/wheels"
  # The wheels are fetched out here where pip is set up for this network (a proxy's certificates),
  # else by the root's pip, and installed offline.
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip download --quiet --only-binary=:all: --python-version 3.11 -d "$rootfs.partial/tmp/wheels" \
      meson ninja cmake
  else
    "${pip_in_root[@]}" download --only-binary=:all: -d /tmp/wheels meson ninja cmake
  fi
  "${pip_in_root[@]}" install --break-system-packages --root-user-action=ignore --no-index \
    --find-links /tmp/wheels meson ninja cmake
  cleanup
  rm -rf "$rootfs.partial/tmp/wheels"
  mv "$rootfs.partial" "$rootfs"
}
if [[ ! -x $rootfs/usr/local/bin/meson ]]; then
  echo "== making the stand-in root in $rootfs (minutes)"
  make_root
fi

# ---- the Debian pieces the check unpacks, fetched here as on any machine with apt ----
ls "$root"/.deps/debs/*.deb >/dev/null 2>&1 || "$root/tests/device/fetch_debs.sh"

# ---- the tree, as the GPU machine receives it: tracked and untracked-not-ignored files, and .deps/debs ----
src="$rootfs/src/mirror"
mkdir -p "$src"
find "$src" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
(cd "$root" && git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - .deps/debs) | tar -xf - -C "$src"

# ---- the toolkit at /usr/local/cuda, /proc, and the run ----
mkdir -p "$rootfs/usr/local/cuda"
mount --bind "$cuda_home" "$rootfs/usr/local/cuda" && mounts+=("$rootfs/usr/local/cuda")
mount -t proc proc "$rootfs/proc" && mounts+=("$rootfs/proc")
in_root() {  # COMMAND: a bash command in the tree's copy, with nothing of this machine's environment
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    OUT=/src/check-out CHECK_LIMIT_FACTOR="${CHECK_LIMIT_FACTOR:-4}" bash -c "cd /src/mirror && $1"
}
# Only the compiler's own -dev packages (the C library's and libstdc++'s headers), and no pkg-config.
extra=$(chroot "$rootfs" dpkg-query -W -f '${Package}\n' | grep -E -- '-dev$|^pkgconf|^pkg-config' |
  grep -vxE 'libc6-dev|libcrypt-dev|libgcc-12-dev|libnsl-dev|libstdc\+\+-12-dev|libtirpc-dev|linux-libc-dev' || true)
if [[ -n $extra ]]; then
  echo "bare_dry_run.sh: the stand-in has packages the GPU machine lacks: $(echo $extra); remove $rootfs" \
    "and run again" >&2
  exit 1
fi

rm -rf "$rootfs/src/check-out"
echo "== check.sh, CHECK_UNTIL=build"
in_root 'CHECK_UNTIL=build tests/device/check.sh' || { echo "bare_dry_run.sh: the check failed before a GPU was needed"; exit 1; }
echo "== check.sh, every step"
set +e
in_root 'tests/device/check.sh' | tee "$cache/check-all.txt"
set -e
rm -rf "$cache/check-out" && cp -a "$rootfs/src/check-out" "$cache/check-out"

# ---- the verdict: every failed row of the table must be one that needs a GPU ----
# A row fails for want of a GPU when its status says so, or its log carries the check's or
# Mirror's own words for it.
no_gpu_words="no GPU|a GPU is required|no usable GPU|none is usable|CUDA driver|no CUDA-capable device"
bad=()
while IFS='|' read -r name status _; do
  name=$(echo "$name" | xargs) status=$(echo "$status" | xargs)
  [[ $status == pass || $status == skip* ]] && continue
  log="$cache/check-out/${name%% *}.log"
  if [[ $status == *"no GPU"* ]] || { [[ -f $log ]] && grep -Eq "$no_gpu_words" "$log"; }; then
    continue
  fi
  bad+=("$name: $status")
done < <(sed -n '/^check  *| pass\/fail/,/^(logs in/p' "$cache/check-all.txt" | sed '1,2d;$d')
if (( ${#bad[@]} )); then
  echo "bare_dry_run.sh: these failed for another reason than the missing GPU (logs in $cache/check-out):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "bare_dry_run.sh: the check stops only where a GPU is needed (logs in $cache/check-out)"
