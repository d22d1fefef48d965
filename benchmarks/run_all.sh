#!/usr/bin/env bash
# The full measurement, as recorded in benchmarks/results/: every program at full length, JSON and
# console output per program, the scaling plot. Waits (up to 10 minutes) for the load average to
# fall below 1 before each program, since the figures are wall-clock times on shared cores.
# Usage: benchmarks/run_all.sh [BUILD_DIR (default build)] [OUT_DIR (default benchmarks/results)]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"  # paths below are relative, so the recorded JSON names no machine's folders
build="${1:-build}"
bin="$build/benchmarks"
out="${2:-benchmarks/results}"
mkdir -p "$out"

wait_for_quiet() {
  for _ in $(seq 120); do
    awk '{exit !($1 < 1.0)}' /proc/loadavg && return 0
    sleep 5
  done
  echo "warning: load still $(cut -d' ' -f1 /proc/loadavg) after 10 minutes; measuring anyway" >&2
}

run() {  # run NAME ARGS...: NAME.json and NAME.txt in $out
  local name="$1"; shift
  wait_for_quiet
  echo "== $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$bin/$name" "$@" --benchmark_out="$out/$name.json" --benchmark_out_format=json | tee "$out/$name.txt"
}

meson compile -C "$build" >/dev/null  # measure what the tree holds now
{ git -C "$root" rev-parse HEAD; git -C "$root" status --short -- . ':!benchmarks'; } > "$out/commit.txt"
run bench_ceilings
run bench_kernels --benchmark_min_time=0.5
run bench_collectives --benchmark_min_time=0.2
run bench_step_scaling --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
python3 "$root/benchmarks/plot_scaling.py" "$out/bench_step_scaling.json" "$out/step_scaling.svg" \
  | tee "$out/step_scaling_plot.txt"
run bench_epoch
# What was measured: the commit, and any uncommitted change in the tree that was built.
{ git -C "$root" rev-parse HEAD; git -C "$root" status --short -- . ':!benchmarks'; } > "$out/commit.txt"
