#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (AddressSanitizer, its own build directory) and runs each
# for SECONDS seconds from the seed corpus in tests/fuzz/corpus/ and, for fuzz_checkpoint, a seed it
# writes itself (new inputs go to a temporary directory, not into the tree). Prints each target's
# execution count; exits non-zero on a finding (a crash, a sanitizer report, a leak, a timeout or
# an out-of-memory), whose input is kept in BUILD_DIR/findings/.
# usage: tests/fuzz/run.sh [SECONDS (default 30)] [BUILD_DIR (default build-fuzz)]
set -euo pipefail

seconds="${1:-30}"
# A fixed seed (FUZZ_SEED=0 for a random one) makes a short run, as CI's, repeat the same
# mutations: a finding there is reproducible, not luck.
seed="${FUZZ_SEED:-1}"
build_dir="${2:-build-fuzz}"
cd "$(dirname "$0")/../.."

scripts/install_debs.sh clang libclang-rt-dev libomp-dev

if [ ! -f "$build_dir/build.ninja" ]; then
  CC=clang CXX=clang++ meson setup "$build_dir" -Dfuzzing=true -Dcuda=disabled -Dtests=disabled -Dbenchmarks=disabled -Dexamples=disabled \
    -Dwerror=false -Db_sanitize=address -Db_lundef=false -Dbuildtype=debugoptimized
fi
# FUZZ_TARGETS picks some.
read -r -a targets <<< "${FUZZ_TARGETS:-fuzz_idx fuzz_weights_h5 fuzz_keras fuzz_keras_config fuzz_checkpoint}"
meson compile -C "$build_dir" "${targets[@]}"

mkdir -p "$build_dir/findings"
status=0
for target in "${targets[@]}"; do
  seeds="tests/fuzz/corpus/${target#fuzz_}"
  work="$(mktemp -d)"
  made="$(mktemp -d)"
  log="$build_dir/findings/$target.log"
  # A format still changing has its valid seed written by its own target at run time, not
  # committed: fuzz_checkpoint --make-seed DIR saves a checkpoint of the model it loads into.
  if [ "$target" = fuzz_checkpoint ]; then
    "$build_dir/tests/fuzz/$target" --make-seed "$made" >/dev/null
  fi
  # -rss_limit_mb: an input that makes a reader allocate past this is a finding (absurd sizes).
  # allocator_may_return_null: a request past what any allocator grants (libhdf5 asks for ~2^62
  # bytes on some damaged files) fails as glibc's malloc would, and the reader must cope with that.
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 LSAN_OPTIONS=suppressions=tests/fuzz/lsan.supp "$build_dir/tests/fuzz/$target" -max_total_time="$seconds" -seed="$seed" -rss_limit_mb=2048 \
      -timeout=10 -artifact_prefix="$build_dir/findings/$target-" -print_final_stats=1 "$work" "$seeds" "$made" >"$log" 2>&1; then
    result="no findings"
  else
    result="FINDING (see $log)"
    status=1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  echo "fuzz: $target: $runs executions in ${seconds} s, corpus $(ls "$work" | wc -l) new inputs: $result"
  rm -rf "$work" "$made"
done
exit $status
