#!/usr/bin/env bash
# The promise of --backup-dir, tested by breaking it: train_cnn is killed (SIGKILL) at random
# moments, some of them while a backup is being written, and started again with the same command
# until it finishes; its final weights must be bitwise those of a run that was never interrupted
# (the metrics JSON carries their fingerprint). With 1 and with 2 host replicas. Then SIGINT and
# SIGTERM: the run stops after its step with exit 130 / 143, says so, and continues from there.
# Usage: test_crash_resume.sh TRAIN_CNN
set -u
train_cnn="$1"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The first 2,000 training and 500 test images of Fashion-MNIST, so that a run is mostly training.
data="$work/data"
python3 - "${MIRROR_DATA_DIR:-/usr/share/datasets/fashion-mnist}" "$data" <<'PY' || exit 1
import gzip, os, struct, sys
source, target = sys.argv[1], sys.argv[2]
os.makedirs(target)
for prefix, count in (("train", 2000), ("t10k", 500)):
    for kind, rank in (("images", 3), ("labels", 1)):
        name = f"{prefix}-{kind}-idx{rank}-ubyte"
        path = os.path.join(source, name)
        raw = gzip.open(path + ".gz").read() if os.path.exists(path + ".gz") else open(path, "rb").read()
        dims = list(struct.unpack(f">{rank}I", raw[4:4 + 4 * rank]))
        row = 1
        for d in dims[1:]:
            row *= d
        dims[0] = count
        body = raw[4 + 4 * rank:4 + 4 * rank + count * row]
        open(os.path.join(target, name), "wb").write(raw[:4] + struct.pack(f">{rank}I", *dims) + body)
PY

# Two epochs (126 steps), a backup after every step: much of the run is spent writing backups, so
# random kills land inside writes too.
# --verbose 2: one line per epoch, and the line that says a run continues from a backup.
common=(--data "$data" --strategy host --threads 2 --epochs 2 --verbose 2 --seed 7)

fingerprint() { sed -n 's/.*"weights_fnv1a64": "\([0-9a-f]*\)".*/\1/p' "$1"; }

for replicas in 1 2; do
  args=("${common[@]}" --replicas "$replicas")
  start=$(date +%s.%N)
  "$train_cnn" "${args[@]}" --metrics-json "$work/ref.json" >/dev/null 2>&1 || fail "the uninterrupted run failed"
  full=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  want=$(fingerprint "$work/ref.json")
  backups="$work/backups-$replicas"
  rm -f "$work/run.json"
  kills=0 resumed=0 in_write=0 attempt=0 finished=0 code=1
  # Kill until runs have resumed mid-training at least 4 times and one kill hit a write (a
  # temporary file left behind), then let the run finish. A run that finishes before its kill is
  # checked too, and the next start begins afresh.
  while [ "$attempt" -lt 150 ]; do
    attempt=$((attempt + 1))
    "$train_cnn" "${args[@]}" --backup-dir "$backups" --backup-every-steps 1 --metrics-json "$work/run.json" \
      >"$work/out" 2>&1 &
    pid=$!
    enough=$([ "$resumed" -ge 4 ] && [ "$in_write" -ge 1 ] && echo 1 || echo 0)
    if [ "$enough" -eq 0 ]; then
      sleep "$(awk -v r="$RANDOM" -v t="$full" 'BEGIN { printf "%.3f", (r % 1000) * t / 1000 }')"
      kill -9 "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    code=$?
    grep -q "continuing from the backup" "$work/out" && resumed=$((resumed + 1))
    if [ "$code" -eq 137 ]; then
      kills=$((kills + 1))
      ls -a "$backups" 2>/dev/null | grep -q '\.tmp-' && in_write=$((in_write + 1))
    elif [ "$code" -eq 0 ]; then
      finished=$((finished + 1))
      got=$(fingerprint "$work/run.json")
      [ "$got" = "$want" ] || fail "replicas=$replicas: a finished run's weights $got differ from the uninterrupted $want"
      [ "$enough" -eq 1 ] && break
    else
      fail "replicas=$replicas: a restarted run exited $code:"; cat "$work/out"; break
    fi
  done
  echo "replicas=$replicas: $kills kills ($in_write while a backup was being written), $resumed resumed runs," \
       "$finished finished runs, $attempt starts; weights $got, uninterrupted $want"
  [ "$code" -eq 0 ] || fail "replicas=$replicas: the run never finished in $attempt starts"
  [ "$resumed" -ge 4 ] || fail "replicas=$replicas: only $resumed runs resumed from a backup"
  [ "$in_write" -ge 1 ] || fail "replicas=$replicas: no kill landed while a backup was being written"
  [ -n "$want" ] || fail "replicas=$replicas: the uninterrupted run wrote no fingerprint"
  [ -z "$(ls -A "$backups" 2>/dev/null | grep backup-)" ] || fail "replicas=$replicas: backups left after a finished run"
done

# SIGINT and SIGTERM: the step ends, a backup is written, the exit code says which signal; the
# next start goes on from that step and ends with the uninterrupted weights.
args=("${common[@]}" --replicas 1)
"$train_cnn" "${args[@]}" --metrics-json "$work/ref.json" >/dev/null 2>&1
want=$(fingerprint "$work/ref.json")
set -m  # job control: a background job keeps SIGINT (without it the shell makes the job ignore SIGINT)
for signal in INT TERM; do
  backups="$work/signal-$signal"
  "$train_cnn" "${args[@]}" --backup-dir "$backups" --backup-every-steps 40 --metrics-json "$work/sig.json" \
    >"$work/out" 2>"$work/err" &
  pid=$!
  # Once training runs (its first backup is there), and before it ends.
  for _ in $(seq 1 2000); do ls "$backups" 2>/dev/null | grep -q '^backup-' && break; sleep 0.005; done
  kill "-$signal" "$pid"
  wait "$pid"
  code=$?
  expected=$([ "$signal" = INT ] && echo 130 || echo 143)
  if [ "$code" -ne "$expected" ]; then
    fail "SIG$signal: exit $code, want $expected"; cat "$work/err"; continue
  fi
  grep -q "stopped by SIG$signal" "$work/err" || { fail "SIG$signal: no message"; cat "$work/err"; }
  grep -q "a backup of that step is in" "$work/err" || fail "SIG$signal: the message does not point at the backup"
  ls "$backups" | grep -q '^backup-' || fail "SIG$signal: no backup written"
  "$train_cnn" "${args[@]}" --backup-dir "$backups" --backup-every-steps 40 --metrics-json "$work/sig.json" >"$work/out" 2>&1 ||
    { fail "SIG$signal: the continued run failed"; cat "$work/out"; }
  grep -q "continuing from the backup" "$work/out" || fail "SIG$signal: the second start did not continue"
  got=$(fingerprint "$work/sig.json")
  echo "SIG$signal: exit $code, continued to weights $got (uninterrupted $want)"
  [ "$got" = "$want" ] || fail "SIG$signal: the continued run's weights differ from the uninterrupted run's"
done

finish "crash and signal"
