#!/usr/bin/env bash
# Builds Mirror with clang under a sanitizer, in a build directory of its own, and runs the tests
# there with this folder's options and suppressions (see README.md). Exits non-zero when a test
# fails or a sanitizer reports anything that is not suppressed.
#   asan: AddressSanitizer + UndefinedBehaviorSanitizer (undefined behaviour aborts the test) and
#         LeakSanitizer at exit, over the whole suite but `install`, whose client links the installed
#         libmirror without the sanitizer runtimes.
#   tsan: ThreadSanitizer over the tests that run several replicas, threads or worker processes.
# usage: tests/sanitizers/run.sh [asan|tsan (default asan)] [BUILD_DIR (default build-KIND)] [TEST...]
set -euo pipefail

kind="${1:-asan}"
build_dir="${2:-build-$kind}"
shift $(($# > 2 ? 2 : $#))
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."

scripts/install_debs.sh clang libclang-rt-dev libomp-dev

case "$kind" in
  asan) sanitize=address,undefined ;;
  tsan) sanitize=thread ;;
  *) echo "usage: $0 [asan|tsan] [BUILD_DIR] [TEST...]" >&2; exit 2 ;;
esac
# -fno-sanitize-recover: UBSan's first report ends the program, so the test fails on it.
# debugoptimized: the loops run at speed and the reports carry lines.
if [ ! -f "$build_dir/build.ninja" ]; then
  CC=clang CXX=clang++ meson setup "$build_dir" -Dcuda=disabled -Dbenchmarks=disabled -Dwerror=false \
    -Db_sanitize="$sanitize" -Db_lundef=false -Dbuildtype=debugoptimized -Dcpp_args=-fno-sanitize-recover=undefined
fi

if [ "$kind" = asan ]; then
  meson compile -C "$build_dir"
  if (($# == 0)); then
    mapfile -t tests < <(meson test -C "$build_dir" --list --no-rebuild 2>/dev/null | grep -vx install)
  else
    tests=("$@")
  fi
  # A report ends the program with a non-zero exit; leaks are checked when each program exits.
  export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_init_order=1:fast_unwind_on_malloc=0"
  # clang 14's ASan runtime does not hold its allocator's locks across fork() (LLVM 15 does), so a
  # child forked while another thread allocates can hang inside ASan's malloc: the one test that
  # forks under allocation churn on purpose checks Mirror's fork safety in the GCC build (CI), not here.
  export GTEST_FILTER="-Hdf5Isolation.ReadsAreSoundWhileOtherThreadsAllocateAndUseHdf5"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0"
else
  if (($# == 0)); then
    # test_allocations replaces operator new, as TSan's runtime does: the two cannot link.
    tests=(test_communicator test_strategy test_equivalence test_model test_training test_callbacks test_backup
           test_trace mpi_communicator multi_worker crash_resume)
  else
    tests=("$@")
  fi
  targets=()
  for t in "${tests[@]}"; do
    case "$t" in
      mpi_communicator) targets+=(test_mpi_communicator) ;;
      multi_worker | train_cnn | crash_resume) targets+=(train_cnn list_devices) ;;
      *) targets+=("$t") ;;
    esac
  done
  meson compile -C "$build_dir" "${targets[@]}"
  # Archer, LLVM's OpenMP tool for TSan, tells it what the OpenMP runtime orders (barriers, the
  # end of a parallel loop); without it every `omp parallel` in Mirror reads as a race.
  omp_lib="$(ldd "$build_dir/libmirror.so" | awk '/libomp\.so/ {print $3; exit}')"
  archer="$(dirname "$omp_lib")/libarcher.so"
  [ -f "$archer" ] || { echo "no libarcher.so beside $omp_lib (Debian: libomp-dev)" >&2; exit 1; }
  export OMP_TOOL_LIBRARIES="$archer"
  export TSAN_OPTIONS="suppressions=$here/tsan.supp:halt_on_error=0:second_deadlock_stack=1:history_size=4"
fi

# Sanitized programs run 2-15x slower than a release build: 4x the tests' own timeouts.
meson test -C "$build_dir" --no-rebuild --print-errorlogs -t 4 "${tests[@]}"
