#!/usr/bin/env bash
# The cross-process all-reduce (bench_collectives under mpirun) over shared memory (btl vader,self:
# OpenMPI 4's shared-memory transport) and over TCP on the loopback (btl tcp,self), with each
# number of workers, 3 repetitions (the table shows each size's median): OUT_DIR/mpi_collectives_
# {shm,tcp}_np{N}.{txt,json}. The workers are processes on this machine's cores, oversubscribed
# when there are more workers than cores.
# Usage: benchmarks/run_mpi_collectives.sh [BUILD_DIR (build)] [OUT_DIR (benchmarks/results)] [WORKERS ("2 4")]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"  # recorded commands name no machine's folders
build="${1:-build}"
out="${2:-benchmarks/results}"
workers_list="${3:-2 4}"
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$out"
# Beyond 4 B ... 64 MiB: the reference CNN's gradient (54,416 floats), a 25 MiB gradient bucket and
# ResNet-50's gradient (25,583,600 floats).
extra=217664,26214400,102334400
for transport in shm tcp; do
  btl=vader,self
  [ "$transport" = tcp ] && btl=tcp,self
  for np in $workers_list; do
    base="$out/mpi_collectives_${transport}_np${np}"
    {
      echo "# commit $(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
      echo "# mpirun --oversubscribe --mca btl $btl -np $np bench_collectives --batches 3 --benchmark_repetitions=3 --extra-bytes $extra"
      mpirun --allow-run-as-root --oversubscribe --mca btl "$btl" -np "$np" "$build/benchmarks/bench_collectives" \
        --batches 3 --benchmark_repetitions=3 --extra-bytes "$extra" \
        --benchmark_out="$base.json" --benchmark_out_format=json 2>&1 | sed -n '/^ranks/,$p'
    } | tee "$base.txt"
  done
done
