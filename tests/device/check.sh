#!/usr/bin/env bash
# The GPU machine's check, in one go and under 8 minutes: unpack the Debian pieces fetched by
# tests/device/fetch_debs.sh into a private prefix (never into /), find CUDA, cuDNN, cuBLAS and
# NCCL (the toolkit, or Python's nvidia-* wheels), configure with -Dcuda=enabled for sm_90, build
# what the check runs, run `meson test`, train the reference CNN for one epoch with one GPU and
# with two replicas on it, continue on the GPU a backup the host strategy wrote, run the GPU
# benchmarks, and print a table last. Every step has its own time limit and the budget is their
# sum, so a slow step fails on its own limit without starving the later ones; a failing step is
# recorded and the rest still run; the exit status is non-zero if anything failed.
#
#   tests/device/check.sh                       # everything
#   CHECK_UNTIL=configure tests/device/check.sh # stop after configuring (works without a GPU)
#   CHECK_UNTIL=build tests/device/check.sh     # stop after building
#
# Environment: BUILD_DIR (default build), CHECK_BUDGET_S (default: the sum of the step limits
# below, 470 s on 16 cores; a smaller one cuts the last steps short), GPU_ARCHITECTURES
# (default 90), MESON (a meson command), OUT (where logs and metrics go; default .deps/check-out),
# MIRROR_DATA_DIR (default: the Fashion-MNIST unpacked from .deps/debs; exported to every step),
# CHECK_LIMIT_FACTOR (below).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
start=$(date +%s)

# Each step's time limit (seconds) on the GPU machine (16 cores, one H200), about four times what
# its work should take there: the build of the targets below is 220 CPU-seconds (measured on a
# 2-core machine), so about 35 s on 16 cores, the longest chain of compiles and links included. The
# unpacking and the library search before the steps take seconds and have no limit. Whole check:
# at most the budget plus those seconds, under 8 minutes. Only the build depends on the number of
# cores: its limit grows by 16/cores below 16, so that a dry run on a small machine can finish.
# CHECK_LIMIT_FACTOR (default 1) multiplies every limit, for a dry run on a slow or shared machine.
cores=$(nproc)
factor=${CHECK_LIMIT_FACTOR:-1}
limit_configure=$((30 * factor))
limit_build=$(( (cores >= 16 ? 150 : 150 * 16 / cores) * factor ))
limit_list_devices=$((15 * factor))
limit_meson_test=$((105 * factor))
limit_train=$((40 * factor))  # each of the two trainings
limit_resume=$((40 * factor))  # a host backup continued on the GPU
limit_bench=$((50 * factor))
budget=${CHECK_BUDGET_S:-$((limit_configure + limit_build + limit_list_devices + limit_meson_test + 2 * limit_train + limit_resume + limit_bench))}
until_step=${CHECK_UNTIL:-all}
build=${BUILD_DIR:-build}
archs=${GPU_ARCHITECTURES:-90}
out=${OUT:-$root/.deps/check-out}
prefix="$root/.deps/prefix"
mkdir -p "$out"

# ---- results table ----
names=() statuses=() accuracies=() epoch_seconds=() rates=()
record() {  # name status [accuracy seconds samples_per_second]
  names+=("$1") statuses+=("$2") accuracies+=("${3:--}") epoch_seconds+=("${4:--}") rates+=("${5:--}")
}
print_table() {
  echo
  printf '%-40s | %-36s | %-13s | %-13s | %s\n' check "pass/fail" "test accuracy" "epoch seconds" "samples/s"
  printf '%s\n' "-----------------------------------------+--------------------------------------+---------------+---------------+----------"
  for i in "${!names[@]}"; do
    printf '%-40s | %-36s | %-13s | %-13s | %s\n' "${names[$i]}" "${statuses[$i]}" "${accuracies[$i]}" \
      "${epoch_seconds[$i]}" "${rates[$i]}"
  done
  echo "(logs in $out; $(( $(date +%s) - start )) s in all)"
}
finish() {
  local status failed=0
  for status in "${statuses[@]}"; do [[ $status == pass || $status == skip* ]] || failed=1; done
  print_table
  exit "$failed"
}
left() { echo $(( budget - ($(date +%s) - start) )); }

# step NAME MAX_SECONDS COMMAND...: runs COMMAND with a timeout (the smaller of MAX_SECONDS and
# the time left), output to $out/NAME.log; records pass/fail and returns the command's status.
step() {
  local name=$1 max=$2 t rc
  shift 2
  t=$(left)
  (( t > max )) && t=$max
  if (( t < 5 )); then
    record "$name" "fail (no time left)"
    return 124
  fi
  echo "== $name (timeout ${t}s): $*"
  local began=$(date +%s)
  timeout --kill-after=10 "$t" "$@" >"$out/$name.log" 2>&1
  rc=$?
  tail -n 5 "$out/$name.log" | sed 's/^/   /'
  echo "   ($(( $(date +%s) - began )) s)"
  if (( rc == 0 )); then
    record "$name" pass
  elif (( rc == 124 || rc == 137 )); then
    record "$name" "fail (timeout ${t}s)"
  else
    record "$name" "fail (exit $rc)"
  fi
  return $rc
}

# step_fn NAME FUNCTION: a quick shell function of this script (no timeout), recorded the same way.
step_fn() {
  echo "== $1"
  local began=$(date +%s)
  "$2" "${@:3}" >"$out/$1.log" 2>&1
  local rc=$?
  sed 's/^/   /' "$out/$1.log" | tail -n 12
  echo "   ($(( $(date +%s) - began )) s)"
  if (( rc == 0 )); then record "$1" pass; else record "$1" "fail (exit $rc)"; fi
  return $rc
}

# ---- 1. Debian pieces into .deps/prefix ----
# The dynamic loader's list of libraries (ldconfig lives in /sbin, which a PATH may leave out).
loader_libraries() {
  local ldconfig
  ldconfig=$(command -v ldconfig || command -v /sbin/ldconfig || command -v /usr/sbin/ldconfig) || return 0
  "$ldconfig" -p 2>/dev/null
}
loader_list=$(loader_libraries)
soname_present() { grep -q "^[[:space:]]$1 " <<<"$loader_list"; }
# extract_deb DEB DIR: the package's files under DIR, with dpkg or without it (a .deb is an ar
# archive holding data.tar.*).
extract_deb() {
  if command -v dpkg >/dev/null; then
    dpkg -x "$1" "$2"
  else
    (cd "$(mktemp -d)" && ar x "$root/$1" && tar xf data.tar.* -C "$2")
  fi
}
# A package of shared libraries (no headers) that the system already has stays the system's: a
# library it ships is known to the dynamic loader under the same name (the system's is the same
# or newer, and compatible); unpacking ours too would shadow it for every program run here.
system_has_package_libraries() {  # DIR
  [[ -d $1/usr/include ]] && return 1
  local library
  while IFS= read -r library; do
    soname_present "$(basename "$library")" && return 0
  done < <(find "$1" -name 'lib*.so*' \( -type f -o -type l \))
  return 1
}
# A link that points into / (Debian's libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) or to a
# library whose package the system had (libzip.so -> libzip.so.4): send it to the copy in the
# prefix, or to the system's library of that name (or of the link's name and a version).
mend_link() {  # LINK
  local link=$1 target candidate name
  target=$(readlink "$link")
  if [[ $target == /* && -e $prefix$target ]]; then
    ln -sfn "$prefix$target" "$link"
    return
  fi
  [[ -e $link ]] && return
  for name in "$(basename "$target")" "$(basename "$link")"; do
    candidate=$(grep -o "/[^ ]*/${name}\(\.[0-9][0-9]*\)*$" <<<"$loader_list" | head -1)
    if [[ -n $candidate && -e $candidate ]]; then
      ln -sfn "$candidate" "$link"
      return
    fi
  done
}
unpack_debs() {
  local deb base stage unpacked=() kept=()
  [[ -d .deps/debs ]] || { echo "no .deps/debs: run tests/device/fetch_debs.sh on a machine with apt first"; return 1; }
  rm -rf "$prefix" && mkdir -p "$prefix"
  stage="$root/.deps/stage"
  for deb in .deps/debs/*.deb; do
    base=$(basename "$deb")
    # Build tools the system has stay the system's.
    case $base in
      meson_*) [[ -n ${MESON:-} ]] || meson --version >/dev/null 2>&1 ||
                 python3 -m mesonbuild.mesonmain --version >/dev/null 2>&1 && continue ;;
      ninja-build_*) command -v ninja >/dev/null && continue ;;
      pkgconf_* | pkgconf-bin_*) command -v pkg-config >/dev/null && continue ;;
    esac
    rm -rf "$stage" && mkdir -p "$stage"
    extract_deb "$deb" "$stage" || return 1
    if system_has_package_libraries "$stage"; then
      kept+=("${base%%_*}")
      continue
    fi
    cp -a "$stage/." "$prefix/" || return 1
    unpacked+=("${base%%_*}")
  done
  rm -rf "$stage"
  echo "unpacked: ${unpacked[*]}"
  echo "the system's own: ${kept[*]:-none}"
  local link
  while IFS= read -r link; do mend_link "$link"; done < <(find "$prefix" -type l)
  # pkg-config files name /usr in their variables (prefix=/usr) or in their flags (hdf5-serial.pc:
  # -I/usr/include/hdf5/serial): rewrite copies of them to the prefix.
  mkdir -p "$prefix/pkgconfig"
  local pc
  for pc in "$prefix"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$prefix"/usr/share/pkgconfig/*.pc; do
    [[ -e $pc ]] || continue
    sed -E "s#(^|[=[:space:]]|-I|-L)/usr(/|\$|[[:space:]])#\1$prefix/usr\2#g" "$pc" >"$prefix/pkgconfig/$(basename "$pc")"
  done
  # Nothing may still point at /usr: the build would take the system's files, or fail on absent ones.
  local stray
  stray=$(for pc in "$prefix"/pkgconfig/*.pc; do
    sed "s#$prefix/usr##g" "$pc" | grep -H --label="$pc" "/usr"
  done)
  if [[ -n $stray ]]; then
    printf '%s\n' "$stray" "pkg-config files above still name /usr outside $prefix"
    return 1
  fi
}
step_fn deps unpack_debs
libdirs="$prefix/usr/lib/x86_64-linux-gnu:$prefix/lib/x86_64-linux-gnu"
export CPLUS_INCLUDE_PATH="$prefix/usr/include${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}"
export C_INCLUDE_PATH="$prefix/usr/include${C_INCLUDE_PATH:+:$C_INCLUDE_PATH}"
export LIBRARY_PATH="$libdirs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CMAKE_PREFIX_PATH="$prefix/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PKG_CONFIG_PATH="$prefix/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PATH="$prefix/usr/bin:$PATH"
# Every step that reads the data set (tests, train_cnn, benchmarks) finds the unpacked copy here.
if [[ -z ${MIRROR_DATA_DIR:-} && -d $prefix/usr/share/datasets/fashion-mnist ]]; then
  export MIRROR_DATA_DIR="$prefix/usr/share/datasets/fashion-mnist"
fi

# ---- 2. CUDA toolkit and libraries ----
# nvcc: on PATH, in /usr/local/cuda, in the newest /usr/local/cuda-X.Y, or from pip (CUDA 13's
# nvidia-cuda-nvcc wheel puts it in nvidia/cu13/bin; nvidia/cuda_nvcc/bin is the older layout).
find_nvcc() {  # wheel folders (Python's nvidia package)...
  local candidates=("$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc) candidate wheel
  mapfile -t -O "${#candidates[@]}" candidates < <(printf '%s\n' /usr/local/cuda-*/bin/nvcc | sort -V -r)
  for wheel in "$@"; do
    mapfile -t -O "${#candidates[@]}" candidates < <(printf '%s\n' "$wheel"/cu[0-9]*/bin/nvcc | sort -V -r)
    candidates+=("$wheel/cuda_nvcc/bin/nvcc")
  done
  for candidate in "${candidates[@]}"; do
    if [[ -n $candidate && -x $candidate ]]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# "NAME MAJOR" per library linked in DIR: the CUDA major version it was made for, "?" when it
# cannot tell. cudart's and cuBLAS's own major versions are CUDA's (the file name says it); cuDNN
# reports the CUDA runtime it was built with; NCCL's version string ends in +cudaX.Y.
library_cuda_majors() {  # DIR
  python3 - "$1" <<'PY'
import ctypes, mmap, os, re, sys
folder = sys.argv[1]
def real(name):
    return os.path.realpath(os.path.join(folder, f"lib{name}.so"))
def from_file_name(name):
    m = re.search(r"\.so\.(\d+)", os.path.basename(real(name)))
    return m and m.group(1)
def cudnn():
    return str(ctypes.CDLL(real("cudnn")).cudnnGetCudartVersion() // 1000)
def nccl():
    with open(real("nccl"), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        found = re.search(rb"NCCL version [0-9.]+[^+\x00]*\+cuda(\d+)\.", m)
        return found and found.group(1).decode()
for name, ask in [("cudart", from_file_name), ("cublas", from_file_name), ("cublasLt", from_file_name),
                  ("cudnn", lambda _: cudnn()), ("nccl", lambda _: nccl())]:
    if not os.path.exists(os.path.join(folder, f"lib{name}.so")):
        continue
    try:
        major = ask(name)
    except Exception:
        major = None
    print(name, major or "?")
PY
}

# Writes DIR/env.sh (CUDA_PATH, PATH, CPATH, LIBRARY_PATH, LD_LIBRARY_PATH) and DIR/lib, links
# libX.so -> the versioned library, since pip's wheels ship only libX.so.N. Refuses libraries made
# for another CUDA major version than nvcc's: they fail at link or run time, far from the cause.
find_cuda() {
  local dir=$1 nvcc cuda_home lib hdr f
  rm -rf "$dir" && mkdir -p "$dir/lib"
  local wheels=()
  mapfile -t wheels < <(python3 -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null)
  nvcc=$(find_nvcc "${wheels[@]}") || {
    echo "no nvcc on PATH, in /usr/local/cuda*/bin or in pip's nvidia-cuda-nvcc: install the CUDA toolkit," \
      "or put its bin folder on PATH"
    return 1
  }
  cuda_home=$(cd "$(dirname "$(readlink -f "$nvcc")")/.." && pwd)
  local roots=("$cuda_home/lib64" "$cuda_home/lib" "$cuda_home/targets/x86_64-linux/lib" /usr/lib/x86_64-linux-gnu)
  local include_roots=("$cuda_home/include" "$cuda_home/targets/x86_64-linux/include" /usr/include)
  (( ${#wheels[@]} )) || wheels=(/nonexistent)  # find with no folder would search the working tree
  local libdirs=() incdirs=() missing=()
  for lib in cudart cublas cublasLt cudnn nccl; do
    f=$( (find "${roots[@]}" -maxdepth 1 -name "lib$lib.so*" 2>/dev/null;
          find "${wheels[@]}" -maxdepth 4 -name "lib$lib.so*" 2>/dev/null) | head -1)
    if [[ -z $f ]]; then missing+=("lib$lib.so"); continue; fi
    echo "lib$lib: $f"
    ln -sfn "$(readlink -f "$f")" "$dir/lib/lib$lib.so"
    [[ " ${libdirs[*]} " == *" $(dirname "$f") "* ]] || libdirs+=("$(dirname "$f")")
  done
  for hdr in cuda_runtime.h cublas_v2.h cudnn.h nccl.h; do
    f=$( (find "${include_roots[@]}" -maxdepth 1 -name "$hdr" 2>/dev/null;
          find "${wheels[@]}" -maxdepth 4 -name "$hdr" 2>/dev/null) | head -1)
    if [[ -z $f ]]; then missing+=("$hdr"); continue; fi
    echo "$hdr: $f"
    # /usr/include as -I (CPATH) would break libstdc++'s #include_next: it is searched anyway.
    [[ $(dirname "$f") == /usr/include || " ${incdirs[*]} " == *" $(dirname "$f") "* ]] || incdirs+=("$(dirname "$f")")
  done
  local toolkit_major name major mixed=()
  toolkit_major=$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\)\..*/\1/p' | head -n 1)
  echo "nvcc: $nvcc ($("$nvcc" --version | tail -n 2 | head -n 1))"
  while read -r name major; do
    if [[ $major == "?" ]]; then echo "lib$name: CUDA version unknown, not checked"; else echo "lib$name is for CUDA $major"; fi
    [[ $major == "?" || $major == "$toolkit_major" ]] ||
      mixed+=("lib$name ($(readlink -f "$dir/lib/lib$name.so")) is for CUDA $major")
  done < <(library_cuda_majors "$dir/lib")
  if (( ${#mixed[@]} )); then
    echo "refusing a mix of CUDA major versions: nvcc ($nvcc) is CUDA $toolkit_major, but"
    printf '  %s\n' "${mixed[@]}"
    echo "Fix: use the libraries for CUDA $toolkit_major (the toolkit's, or pip's nvidia-*-cu$toolkit_major" \
      "wheels), or put an nvcc of their CUDA version first on PATH"
    return 1
  fi
  local IFS=:
  {
    echo "export CUDA_PATH='$cuda_home'"
    echo "export PATH='$cuda_home/bin':\"\$PATH\""
    echo "export CPATH='${incdirs[*]}'\${CPATH:+:\$CPATH}"
    echo "export LIBRARY_PATH='$dir/lib:${libdirs[*]}':\"\$LIBRARY_PATH\""
    echo "export LD_LIBRARY_PATH='${libdirs[*]}':\"\$LD_LIBRARY_PATH\""
  } >"$dir/env.sh"
  command -v c++ >/dev/null || { echo "no C++ compiler (c++) on PATH: nvcc needs one"; return 1; }
  if (( ${#missing[@]} )); then echo "not found: ${missing[*]}"; return 1; fi
}
if ! step_fn cuda-libraries find_cuda "$root/.deps/cuda"; then finish; fi
source "$root/.deps/cuda/env.sh"

# ---- 3. Meson ----
meson_cmd=()
if [[ -n ${MESON:-} ]]; then
  read -r -a meson_cmd <<<"$MESON"
elif command -v meson >/dev/null && meson --version >/dev/null 2>&1 && [[ $(command -v meson) != "$prefix"/* ]]; then
  meson_cmd=(meson)
elif python3 -m mesonbuild.mesonmain --version >/dev/null 2>&1; then
  meson_cmd=(python3 -m mesonbuild.mesonmain)
elif [[ -f $prefix/usr/bin/meson ]]; then  # Debian's Meson 1.0.1, unpacked
  export PYTHONPATH="$prefix/usr/lib/python3/dist-packages${PYTHONPATH:+:$PYTHONPATH}"
  meson_cmd=(python3 "$prefix/usr/bin/meson")
fi
command -v ninja >/dev/null || echo "no ninja on PATH (not even from .deps/debs)"
if (( ${#meson_cmd[@]} == 0 )); then
  record configure "fail (no meson found)"
  finish
fi
echo "meson: ${meson_cmd[*]} ($("${meson_cmd[@]}" --version 2>&1)), ninja: $(ninja --version 2>&1)"

# ---- 4. configure, build, test ----
# Warnings as errors are CI's job, with the project's compiler (g++ 12); this machine's may be newer
# and warn about other things, which must not hide whether the GPU code works.
setup_args=(-Dcuda=enabled "-Dgpu_architectures=$archs" -Dbuildtype=release -Dwerror=false)
# A build directory this Meson can read is reconfigured, keeping what is built (a check run again
# after CHECK_UNTIL=build compiles nothing anew); any other is wiped.
if "${meson_cmd[@]}" introspect "$build" --buildoptions >/dev/null 2>&1; then
  setup_args+=(--reconfigure)
elif [[ -d $build ]]; then
  setup_args+=(--wipe)
fi
if ! step configure "$limit_configure" "${meson_cmd[@]}" setup "$build" "${setup_args[@]}"; then finish; fi
[[ $until_step == configure ]] && finish
# Only what the check runs: the programs of suite 'gpu''s tests (tests/meson.build), train_cnn,
# list_devices and the GPU benchmarks (the host-only tests and benchmarks would take most of the
# build and run nothing here).
test_targets() {
  "${meson_cmd[@]}" introspect "$build" --targets --tests | python3 -c '
import json, sys
info = json.load(sys.stdin)
wanted = {d for t in info["tests"] if any(s.split(":")[-1] == "gpu" for s in t["suite"]) for d in t["depends"]}
print("\n".join(t["name"] for t in info["targets"] if t["type"] == "executable" and t["id"] in wanted))'
}
mapfile -t targets < <(test_targets)
# mirror_cuda: the CUDA module, which libmirror loads at run time (nothing links it but the CUDA tests).
targets+=(list_devices train_cnn bench_gpu mirror_cuda)
if ! step build "$limit_build" "${meson_cmd[@]}" compile -C "$build" "${targets[@]}"; then finish; fi
[[ $until_step == build ]] && finish

step list-devices "$limit_list_devices" "$build/examples/list_devices"
if ! grep -q "GPU:0" "$out/list-devices.log"; then
  record gpu-visible "fail (no GPU: see list-devices.log)"
fi
# The tests of suite 'gpu' only (tests/meson.build): those that run on the GPU start first; the
# host-only tests run the same without a GPU, in CI, and would not fit this step's limit.
step meson-test "$limit_meson_test" "${meson_cmd[@]}" test -C "$build" --no-rebuild --print-errorlogs \
  --num-processes "$cores" --suite gpu
if grep -q "no GPU: " "$build/meson-logs/testlog.txt" 2>/dev/null; then
  record gpu-tests "fail (skipped: no GPU)"
  grep -h -m 1 "no GPU: " "$build/meson-logs/testlog.txt"
fi

# ---- 5. training the reference CNN ----
# Puts a finished training's test accuracy, epoch seconds and samples/s (from its metrics JSON)
# into the last row of the table.
record_training() {  # name metrics-json
  local name=$1 metrics=$2 summary
  summary=$(python3 - "$metrics" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
e = m["epochs"][-1]
print(f'{m["test"]["accuracy"]:.4f} {e["seconds"]:.2f} {e["samples_per_second"]:.0f} {m["replicas"]} {",".join(m["devices"])}')
PY
  ) || { statuses[-1]="fail (bad metrics JSON)"; return; }
  read -r acc secs rate replicas devices <<<"$summary"
  accuracies[-1]=$acc epoch_seconds[-1]=$secs rates[-1]=$rate
  names[-1]="$name ($replicas on $devices)"
}
train() {  # name flags...
  local name=$1 metrics="$out/$1.json"
  shift
  rm -f "$metrics"
  if step "$name" "$limit_train" "$build/examples/train_cnn" --epochs 1 --verbose 2 --require-gpu \
      --metrics-json "$metrics" "$@" && [[ -f $metrics ]]; then
    record_training "$name" "$metrics"
  fi
}
train train-one-device --strategy one-device
train train-mirrored-x2 --strategy mirrored --replicas-per-gpu 2
# A backup the host strategy wrote (stopped by SIGINT), continued on the GPU (epoch figures: the
# GPU's part of the epoch).
if step resume-host-on-gpu "$limit_resume" tests/device/resume_on_gpu.sh "$build/examples/train_cnn" \
    "$out/host-backup" "$out/resume-host-on-gpu.json"; then
  record_training resume-host-on-gpu "$out/resume-host-on-gpu.json"
fi

# ---- 6. GPU benchmarks ----
step bench-gpu "$limit_bench" "$build/benchmarks/bench_gpu" --benchmark_min_time=0.05

finish
