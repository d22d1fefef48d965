#!/usr/bin/env bash
# A network simulation on one machine: the cross-process all-reduce and the multi-worker step of
# the reference CNN with MPI forced onto TCP, inside a network namespace whose loopback is shaped
# to each PROFILE (RATE:DELAY, e.g. 10gbit:50us). Needs root (ip netns, tc). Writes, per profile
# and worker count, bench_collectives' table and JSON and the step times to OUT_DIR.
#
# The shaping: `tc qdisc ... netem delay DELAY rate RATE` where the kernel has sch_netem. Where it
# has not (a kernel built without it: "Error: Specified qdisc kind is unknown."), the rate alone is
# applied with a token bucket (tbf) and the delay is NOT: the run says so in its output, and
# alpha_beta.py adds the profile's delay to the fitted per-hop latency instead. Either way every
# process shares the one shaped loopback, so the rate is that of a shared medium: the n workers'
# traffic together moves at RATE, not each worker's link.
#
# Usage: benchmarks/netem/run.sh [BUILD_DIR (build)] [OUT_DIR (benchmarks/results/netem)] \
#          [PROFILES ("none 10gbit:50us 1gbit:200us")] [WORKERS ("2 4")]
# Environment: PARTS (default "collectives cnn resnet50"), BATCHES (bench_collectives --batches,
# default 3), STEP_SAMPLES (samples of the CNN's training run, default 16000), RUNS (CNN training
# runs per layout, default 3). resnet50: bench_step_scaling --model resnet50 as the workers, batch
# 2 per worker, 3 timed fit() calls of 2 steps: the step, the buckets' all-reduce alone, and how
# much of it backward hid.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"  # recorded commands name no machine's folders
build="${1:-build}"
out="${2:-benchmarks/results/netem}"
profiles="${3:-none 10gbit:50us 1gbit:200us}"
workers_list="${4:-2 4}"
batches="${BATCHES:-3}"
step_samples="${STEP_SAMPLES:-16000}"
runs="${RUNS:-3}"
parts="${PARTS:-collectives cnn resnet50}"
has() { [[ " $parts " == *" $1 "* ]]; }
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$out"

ns="mirror-netsim-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
in_ns() { ip netns exec "$ns" "$@"; }
in_ns ip link set lo up
in_ns ip link set lo mtu 9000  # a jumbo-frame data-centre link; lo's 64 KiB would need a 64 KiB burst

# Sizes beyond bench_collectives' 4 B ... 64 MiB: the reference CNN's gradient (54,416 floats),
# one 25 MiB gradient bucket, and ResNet-50's gradient (25,583,600 floats).
extra=217664,26214400,102334400
mpirun=(mpirun --allow-run-as-root --oversubscribe --mca btl tcp,self --mca btl_tcp_if_include lo
        --mca oob_tcp_if_include lo)

shape() {  # shape PROFILE: prints what was applied
  in_ns tc qdisc del dev lo root 2>/dev/null || true
  [ "$1" = none ] && { echo "unshaped loopback"; return; }
  local rate="${1%%:*}" delay="${1#*:}" err
  if err=$(in_ns tc qdisc add dev lo root netem delay "$delay" rate "$rate" limit 100000 2>&1); then
    echo "netem delay $delay rate $rate"
  else
    echo "# netem unavailable ('tc qdisc add dev lo root netem delay $delay rate $rate': $err)" >&2
    in_ns tc qdisc add dev lo root tbf rate "$rate" burst 64kb limit 32mb
    echo "tbf rate $rate (delay $delay NOT applied: netem unavailable)"
  fi
}

# ResNet-50's step with the same replicas in one process (sums in memory), for comparison.
if has resnet50; then
  {
    echo "# commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# one process: bench_step_scaling --model resnet50 --benchmark_min_time=0.01 (weak, 2 per replica)"
    "$build/benchmarks/bench_step_scaling" --model resnet50 --benchmark_min_time=0.01 \
      --benchmark_filter="resnet50/weak/replicas:($(echo $workers_list | tr ' ' '|'))/" \
      --benchmark_out="$out/resnet50_one_process.json" --benchmark_out_format=json 2>&1 | sed -n '/^Model/,$p'
  } | tee "$out/resnet50_one_process.txt"
fi

for profile in $profiles; do
  applied=$(shape "$profile")
  name="${profile//:/_}"
  for np in $workers_list; do
    base="$out/collectives_${name}_np${np}"
    has collectives && {
      echo "# commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
      echo "# profile $profile: $applied; $np workers, MPI over TCP (btl tcp,self) on the namespace's loopback"
      in_ns "${mpirun[@]}" -np "$np" "$build/benchmarks/bench_collectives" --batches "$batches" --benchmark_repetitions=3 \
        --extra-bytes "$extra" --benchmark_out="$base.json" --benchmark_out_format=json 2>&1 |
        sed -n '/^ranks/,$p'
    } | tee "$base.txt"
    # ResNet-50's step across the workers: its 4 buckets against backward.
    if has resnet50; then
      {
        echo "# commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# profile $profile: $applied; $np workers; bench_step_scaling --model resnet50 --fit-calls 3"
        in_ns "${mpirun[@]}" -np "$np" "$build/benchmarks/bench_step_scaling" --model resnet50 --fit-calls 3 \
          --benchmark_out="$out/resnet50_${name}_np${np}.json" --benchmark_out_format=json 2>&1 | sed -n '/^Model/,$p'
      } | tee "$out/resnet50_${name}_np${np}.txt"
    fi
    has cnn || continue
    # The reference CNN's step: np workers over the shaped TCP against one process with np
    # replicas (the same compute, sums in memory); one thread per replica in both.
    steps="$out/step_${name}_np${np}.txt"
    echo "# profile $profile: $applied; train_cnn, $step_samples samples, 1 epoch, batch 32, seconds per epoch" > "$steps"
    for run in $(seq "$runs"); do
      for layout in host multi-worker; do
        json="$(mktemp)"
        if [ "$layout" = host ]; then
          in_ns "$build/examples/train_cnn" --strategy host --replicas "$np" --threads "$np" \
            --train-samples "$step_samples" --epochs 1 --verbose 0 --metrics-json "$json" >/dev/null 2>&1
        else
          in_ns "${mpirun[@]}" -np "$np" "$build/examples/train_cnn" --strategy multi-worker --threads 1 \
            --train-samples "$step_samples" --epochs 1 --verbose 0 --metrics-json "$json" >/dev/null 2>&1
        fi
        secs=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['epochs'][0]['seconds'])" "$json")
        echo "$layout run $run: $secs" | tee -a "$steps"
        rm -f "$json"
      done
    done
  done
done
in_ns tc qdisc del dev lo root 2>/dev/null || true
