#!/usr/bin/env bash
# A quick run of every benchmark program (small sizes, a hundredth of a second each), for CI: it
# proves they build, run, check their results (#wrong = 0) and write JSON that plot_scaling.py can
# read. About half a minute on two cores. Usage: benchmarks/smoke.sh [BUILD_DIR (default build)]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/${1:-build}/benchmarks"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
quick=(--benchmark_min_time=0.01)

"$bin/bench_ceilings" "${quick[@]}" --benchmark_filter='n:256/|bytes:1048576/'
"$bin/bench_collectives" "${quick[@]}" --benchmark_filter='bytes:(4096|65536)/'
"$bin/bench_kernels" "${quick[@]}" --benchmark_filter='batch:32/'
"$bin/bench_step_scaling" "${quick[@]}" --benchmark_filter='^(weak|strong)/replicas:(1|2)/' \
  --benchmark_out="$out/scaling.json" --benchmark_out_format=json
python3 "$root/benchmarks/plot_scaling.py" "$out/scaling.json" "$out/scaling.svg"
# A ResNet-20 (residual graph, bucketed reducer, step timeline) on one and two replicas at batch 4
"$bin/bench_step_scaling" --model resnet20 --per-replica-batch 4 "${quick[@]}" \
  --benchmark_filter='^resnet20/weak/replicas:(1|2)/'
"$bin/bench_epoch" --train-samples 640 --epochs 1
# MPI builds, 2 workers: the cross-process all-reduce (4 B ... 4 KiB, one batch each) and the CNN's
# step across the workers (one timed fit)
if command -v mpirun >/dev/null && ldd "$bin/bench_collectives" | grep -q libmpi; then
  workers=(mpirun --allow-run-as-root --oversubscribe -np 2)
  "${workers[@]}" "$bin/bench_collectives" --max-bytes 4096 --batches 1
  "${workers[@]}" "$bin/bench_step_scaling" --fit-calls 1
fi
if [[ -x "$bin/bench_gpu" ]]; then  # CUDA builds; each case skips, saying why, without a GPU
  "$bin/bench_gpu" "${quick[@]}"
fi
echo "benchmark smoke run: every program ran"
