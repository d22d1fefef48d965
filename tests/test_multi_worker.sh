#!/usr/bin/env bash
# train_cnn as several worker processes under mpirun: W workers x R replicas (2x2, 3x2, 3x1, 2x1;
# 252 steps each) end with bitwise the weights of one process with W*R replicas (the
# "weights_fnv1a64" of the metrics JSON), also when killed and continued from the chief's backup;
# a worker that is killed or stalls ends the job in bounded time with an error naming it; workers
# that disagree (batch size, replicas per worker) are refused before any step.
# Usage: test_multi_worker.sh TRAIN_CNN MPIRUN
set -u
train_cnn="$1"
mpirun=("$2" --allow-run-as-root --oversubscribe --mca btl self,vader,tcp --mca btl_vader_single_copy_mechanism none)
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Few samples and 4 epochs: 252 steps of batch 32. One thread per replica in every layout, so that
# each replica's arithmetic is the same whatever the process it lives in.
job=(--train-samples 2000 --epochs 4 --verbose 0)
fingerprint() { grep -o '"weights_fnv1a64": "[0-9a-f]*"' "$1" | cut -d'"' -f4; }

for layout in "2 2" "3 2" "3 1" "2 1"; do
  read -r workers replicas <<<"$layout"
  total=$((workers * replicas))
  "$train_cnn" "${job[@]}" --strategy host --replicas "$total" --threads "$total" \
    --metrics-json "$work/one.json" >"$work/out" 2>&1 || { fail "one process, $total replicas"; cat "$work/out"; }
  "${mpirun[@]}" -np "$workers" "$train_cnn" "${job[@]}" --strategy multi-worker --replicas "$replicas" \
    --threads "$replicas" --metrics-json "$work/multi.json" >"$work/out" 2>&1 ||
    { fail "$workers workers x $replicas replicas exited non-zero"; cat "$work/out"; }
  one=$(fingerprint "$work/one.json") multi=$(fingerprint "$work/multi.json")
  if [ -n "$one" ] && [ "$one" = "$multi" ]; then
    echo "ok: $workers workers x $replicas replicas = one process x $total replicas, bitwise ($one)"
  else
    fail "$workers workers x $replicas replicas: weights $multi, one process x $total replicas: $one"
  fi
  grep -q "multi-worker strategy with $workers workers x $replicas replica" "$work/out" ||
    fail "the world was not announced: $(cat "$work/out")"
done

# Backups: the chief alone writes them; a job killed mid-run and started again continues on every
# worker from the chief's newest backup and ends with the weights of the uninterrupted run (the
# last layout above, 2 workers x 1 replica, left them in multi.json).
uninterrupted=$(fingerprint "$work/multi.json")
backup_job=("$train_cnn" --train-samples 2000 --epochs 4 --strategy multi-worker --threads 1 --backup-dir "$work/backups"
            --backup-every-steps 10 --metrics-json "$work/resumed.json")
"${mpirun[@]}" -np 2 "${backup_job[@]}" --verbose 0 >"$work/out" 2>&1 &
first=$!
for _ in $(seq 2000); do ls "$work/backups" 2>/dev/null | grep -q '^backup-' && break; sleep 0.005; done
kill -9 "$(pgrep -P "$first" | tail -1)" 2>/dev/null
wait "$first"
if ! ls "$work/backups" 2>/dev/null | grep -q '^backup-'; then
  fail "no backup written by the first run"
elif "${mpirun[@]}" -np 2 "${backup_job[@]}" --verbose 1 >"$work/out" 2>&1 &&
     grep -q "continuing from the backup" "$work/out" && [ "$(fingerprint "$work/resumed.json")" = "$uninterrupted" ]; then
  echo "ok: killed and started again, 2 workers continue from the chief's backup: bitwise the uninterrupted weights"
else
  fail "resuming 2 workers from a backup: weights $(fingerprint "$work/resumed.json"), uninterrupted $uninterrupted"
  tail -5 "$work/out"
fi

# --fast-sums: MPI's order, the same model within rounding.
"${mpirun[@]}" -np 2 "$train_cnn" "${job[@]}" --strategy multi-worker --replicas 2 --threads 2 --fast-sums \
  --metrics-json "$work/fast.json" >"$work/out" 2>&1 || { fail "--fast-sums exited non-zero"; cat "$work/out"; }
python3 - "$work/one.json" "$work/fast.json" <<'PY' || fail "--fast-sums: test loss differs by more than 1e-2 from one process's"
import json, sys
a, b = (json.load(open(p))["test"]["loss"] for p in sys.argv[1:])
sys.exit(0 if abs(a - b) <= 1e-2 else 1)
PY

# Workers that disagree are refused before any step, naming both values.
expect_refusal() {
  local pattern="$1"
  shift
  timeout 60 "${mpirun[@]}" "$@" >"$work/out" 2>&1
  local got=$?
  if [ "$got" -eq 0 ] || [ "$got" -eq 124 ] || ! grep -q -- "$pattern" "$work/out"; then
    fail "refusal ($pattern) exited $got:"; cat "$work/out"
  else
    echo "ok: refused at start: $pattern"
  fi
  [ ! -e "$work/refused.json" ] || fail "a refused job wrote its metrics"
}
expect_refusal "the workers disagree on the batch size: worker 0 has 32, worker 1 has 64" \
  -np 1 "$train_cnn" "${job[@]}" --strategy multi-worker --batch-size 32 --metrics-json "$work/refused.json" : \
  -np 1 "$train_cnn" "${job[@]}" --strategy multi-worker --batch-size 64
expect_refusal "the number of replicas per worker: worker 0 has 1, worker 1 has 2" \
  -np 1 "$train_cnn" "${job[@]}" --strategy multi-worker --replicas 1 --metrics-json "$work/refused.json" : \
  -np 1 "$train_cnn" "${job[@]}" --strategy multi-worker --replicas 2

# A worker that raises once the job has started (here: worker 1 finds damaged data) ends the job:
# it prints why and aborts the others, which wait in the check before the first step.
mkdir -p "$work/damaged"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  printf 'not an idx file' >"$work/damaged/$f"
done
start=$SECONDS
timeout 60 "${mpirun[@]}" -np 1 "$train_cnn" "${job[@]}" --strategy multi-worker : \
  -np 1 "$train_cnn" "${job[@]}" --strategy multi-worker --data "$work/damaged" >"$work/out" 2>&1
got=$?
if [ "$got" -eq 0 ] || [ "$got" -eq 124 ] || ! grep -q "magic" "$work/out"; then
  fail "a worker that raised: the job exited $got:"; tail -20 "$work/out"
else
  echo "ok: a worker that raised ended the job in $((SECONDS - start)) s with exit $got"
fi

# rank_pid MPIRUN_PID RANK: the pid of the worker of that rank (0 when not yet started).
rank_pid() {
  for pid in $(pgrep -P "$1"); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$pid"; return; fi
  done
  echo 0
}
# lose_worker SIGNAL: starts a long job, waits for training, sends SIGNAL to worker 1, and expects
# the job to end non-zero within 60 s naming worker 1.
lose_worker() {
  local signal="$1" pattern="$2"
  "${mpirun[@]}" -np 2 "$train_cnn" --train-samples 2000 --epochs 1000 --verbose 0 --strategy multi-worker \
    --collective-timeout 3 >"$work/out" 2>&1 &
  local job_pid=$! pid=0
  for _ in $(seq 300); do
    grep -q "multi-worker strategy" "$work/out" && pid=$(rank_pid "$job_pid" 1) && [ "$pid" != 0 ] && break
    sleep 0.1
  done
  [ "$pid" != 0 ] || { fail "worker 1 never started"; kill -9 "$job_pid"; return; }
  sleep 2  # past loading the data: training
  local start=$SECONDS
  kill -s "$signal" "$pid"
  local waited=0
  while kill -0 "$job_pid" 2>/dev/null && [ $waited -lt 600 ]; do sleep 0.1; waited=$((waited + 1)); done
  if kill -0 "$job_pid" 2>/dev/null; then
    fail "SIG$signal to worker 1: the job still runs after 60 s"; kill -9 "$job_pid"; kill -9 "$pid"; return
  fi
  wait "$job_pid"
  local got=$?
  if [ "$got" -eq 0 ] || ! grep -Eq -- "$pattern" "$work/out"; then
    fail "SIG$signal to worker 1: exited $got, output:"; tail -20 "$work/out"
  else
    echo "ok: SIG$signal to worker 1 ended the job in $((SECONDS - start)) s with exit $got: $(grep -Eo -- "$pattern.{0,60}" "$work/out" | head -1)"
  fi
  kill -9 "$pid" 2>/dev/null
}
# Killed: mpirun sees the process go and ends the job, naming its rank.
lose_worker KILL "rank 1"
# Stalled (stopped, its sockets open): the chief's collective times out and names it.
lose_worker STOP "timed out after 3000 ms on worker 0 .*worker 1"

finish multi-worker
