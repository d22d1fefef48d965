#!/usr/bin/env bash
# train_cnn end to end: exit codes and messages for bad input, the metrics JSON of a short run.
# Usage: test_train_cnn.sh TRAIN_CNN
set -u
train_cnn="$1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# expect CODE PATTERN ARGS...: runs train_cnn, checks its exit code and that stderr matches PATTERN.
expect() {
  local code="$1" pattern="$2"
  shift 2
  "$train_cnn" --verbose 0 "$@" >"$work/out" 2>"$work/err"
  local got=$?
  if [ "$got" -ne "$code" ] || ! grep -Eq -- "$pattern" "$work/err"; then
    echo "FAIL: train_cnn $* exited $got (want $code), stderr:"; cat "$work/err"
    failures=$((failures + 1))
  else
    echo "ok: train_cnn $* -> $got"
  fi
}

expect 1 "dataset-fashion-mnist" --data "$work/missing"
mkdir -p "$work/corrupt"
printf 'not an idx file at all' >"$work/corrupt/train-images-idx3-ubyte"
printf 'not an idx file at all' >"$work/corrupt/train-labels-idx1-ubyte"
printf 'not an idx file at all' >"$work/corrupt/t10k-images-idx3-ubyte"
printf 'not an idx file at all' >"$work/corrupt/t10k-labels-idx1-ubyte"
expect 1 "magic" --data "$work/corrupt"
expect 2 "--batch-size: must be above 0, got 0" --batch-size 0 --train-samples 64
expect 2 "--batch-size: must be above 0, got -3" --batch-size -3 --train-samples 64
expect 2 "--seed: must be at least 0, got -1" --seed -1
expect 2 "--classes must be in \[2, 256\]" --classes 100000000
expect 2 "--replicas: must be above 0" --replicas 0
expect 2 "--threads: must be at least 0" --threads -1
expect 2 "--replicas-per-gpu: must be above 0" --replicas-per-gpu 0
# Host threads and replicas: at most 4x the hardware threads (threads past that only take turns).
cores=$(getconf _NPROCESSORS_ONLN)  # what std::thread::hardware_concurrency() counts
limit=$((4 * cores))
expect 2 "--threads: must be at most $limit \\(4 x this machine's $cores hardware threads" --threads $((limit + 1))
expect 2 "--threads: must be at most $limit" --threads 70000
expect 2 "--replicas: must be at most $limit" --replicas $((limit + 1))
expect 2 "--devices: must be at least 0" --devices 0,-1
MIRROR_REQUIRE_GPU=maybe expect 2 "MIRROR_REQUIRE_GPU='maybe' is neither on" --train-samples 64
expect 2 "not expected" --bogus 1
expect 2 "--epochs: needs a number, got 'two'" --epochs two
expect 2 "--optimizer.*sgd" --optimizer lamb
expect 2 "--momentum applies to --optimizer sgd or rmsprop" --momentum 0.9
expect 2 "--nesterov needs" --optimizer sgd --nesterov
expect 2 "--warmup-steps applies to --schedule cosine" --warmup-steps 10
expect 2 "needs --validation-split" --early-stopping-patience 2
expect 2 "does not exist" --csv-log "$work/no/such/dir/log.csv"

# Output paths are checked before the data is read, so a bad one costs no training.
# before_data: the last run printed no "Data:" line, i.e. stopped before loading anything.
before_data() {
  if grep -q "^Data:" "$work/out"; then echo "FAIL: the last run loaded the data first"; failures=$((failures + 1)); fi
}
expect 2 "--metrics-json .*: the directory .* does not exist" --metrics-json "$work/no/such/dir/m.json"
before_data
expect 2 "--metrics-json .*: that is a directory" --metrics-json "$work"
expect 2 "--trace .*: the directory .* does not exist" --trace "$work/no/such/dir/t.json"
before_data
expect 2 "--csv-log .*: that is a directory" --csv-log "$work"
before_data
# A directory no file can be made in: read-only for a user; for root (who may write anywhere) /sys,
# when this machine mounts it so. Skipped where neither holds.
mkdir -p "$work/locked" && chmod 555 "$work/locked"
locked=""
for dir in "$work/locked" /sys; do
  if ! touch "$dir/.probe" 2>/dev/null; then locked="$dir"; break; fi
  rm -f "$dir/.probe"
done
if [ -n "$locked" ]; then
  expect 2 "--metrics-json .*: cannot create a file in .*: (Permission denied|Read-only file system)" \
    --metrics-json "$locked/m.json"
  before_data
  expect 2 "--csv-log .*: cannot create a file in" --csv-log "$locked/log.csv"
  if [ -n "$(ls -A "$work/locked")" ]; then echo "FAIL: files left in $work/locked"; failures=$((failures + 1)); fi
else
  echo "skipped: no unwritable directory to try --metrics-json in"
fi
chmod 755 "$work/locked"

# idx_set DIR PREFIX COUNT HEIGHT WIDTH [INDEX=LABEL...]: writes DIR/PREFIX-images-idx3-ubyte and
# DIR/PREFIX-labels-idx1-ubyte, COUNT images with labels 0..9 in turn except those given.
idx_set() {
  mkdir -p "$1"
  python3 - "$@" <<'PY'
import struct, sys
d, prefix, (count, h, w) = sys.argv[1], sys.argv[2], map(int, sys.argv[3:6])
labels = [i % 10 for i in range(count)]
for given in sys.argv[6:]:
    i, label = map(int, given.split("="))
    labels[i] = label
with open(f"{d}/{prefix}-images-idx3-ubyte", "wb") as f:
    f.write(struct.pack(">4B3I", 0, 0, 8, 3, count, h, w) + bytes(i * 37 % 256 for i in range(count * h * w)))
with open(f"{d}/{prefix}-labels-idx1-ubyte", "wb") as f:
    f.write(struct.pack(">4BI", 0, 0, 8, 1, count) + bytes(labels))
PY
}
# The test set is checked with the training set, right after loading: a fault in it is a data error
# (exit 1) found before the model is built, not after every epoch ran.
idx_set "$work/small" train 64 8 8 && idx_set "$work/small" t10k 16 8 8
idx_set "$work/label12" train 64 8 8 && idx_set "$work/label12" t10k 16 8 8 5=12
expect 1 "label 12 at index 5 of the test set is outside \[0, 10\)" --data "$work/label12" --epochs 1
idx_set "$work/shapes" train 64 8 8 && idx_set "$work/shapes" t10k 16 6 6
expect 1 "the test set .* has images of \(6, 6, 1\) but the training set's are \(8, 8, 1\)" --data "$work/shapes"
idx_set "$work/empty" train 64 8 8 && idx_set "$work/empty" t10k 0 8 8
expect 1 "the test set .* is empty" --data "$work/empty"
# Images without pixels are a data fault (1), not a bad flag (2).
idx_set "$work/no_pixels" train 64 0 0 && idx_set "$work/no_pixels" t10k 16 0 0
expect 1 "the training set .* has images of 0 x 0 pixels" --data "$work/no_pixels"
# More host threads than cores: allowed, with a warning.
expect 0 "warning: $(($(nproc) + 1)) host threads were asked for but this machine has $(nproc) hardware threads" \
  --strategy host --threads $(($(nproc) + 1)) --data "$work/small" --epochs 1
# Refused combinations are refused before any data is read: a missing data directory is not reached.
expect 2 "--nesterov needs" --optimizer sgd --nesterov --data "$work/missing"
if "$train_cnn" --help >"$work/out" 2>&1 && grep -q -- "--optimizer" "$work/out"; then
  echo "ok: --help -> 0"
else
  echo "FAIL: --help"; cat "$work/out"; failures=$((failures + 1))
fi
expect 1 "label [0-9]+ at index [0-9]+ .* outside \[0, 5\)" --classes 5 --train-samples 64
# A stopped worker of a multi-worker job ends it after --collective-timeout: 2 minutes by default,
# which a person waits for, not 10.
if "$train_cnn" --help | grep -Eq -- "--collective-timeout FLOAT.*=120( |$)"; then
  echo "ok: --collective-timeout defaults to 120 s"
else
  echo "FAIL: --collective-timeout's default or help:"; "$train_cnn" --help | grep -A2 -- --collective-timeout
  failures=$((failures + 1))
fi

# Without a GPU, requiring one is an error that says why (with one, there is nothing to refuse).
if ! "$(dirname "$train_cnn")/list_devices" 2>/dev/null | grep -q "device_type='GPU'"; then
  expect 1 "a GPU is required .* none is usable" --require-gpu --train-samples 64
  MIRROR_REQUIRE_GPU=1 expect 1 "a GPU is required" --train-samples 64
fi

# A short real run writes the metrics JSON (with the end-of-fit report) and the trace. --strategy
# host: --replicas counts host replicas, and on a machine with a GPU the automatic choice would be
# a GPU strategy.
if "$train_cnn" --verbose 0 --epochs 1 --train-samples 2000 --strategy host --replicas 2 --metrics-json "$work/m.json" \
     --trace "$work/t.json" >"$work/out" 2>"$work/err" &&
   python3 - "$work/m.json" "$work/t.json" <<'PY' &&
import json, sys
m = json.load(open(sys.argv[1]))
r = m["step_report"]
assert r["steps"] == 63 and r["samples_per_second"] > 0 and len(r["replicas"]) == 2, r
assert set(r) == {"steps", "step_seconds", "samples_per_second", "replicas"}, r  # no unmeasured figures
# Each fraction is written with 6 significant digits: their sum is 1 within 3 rounding steps.
assert all(abs(s["compute"] + s["all_reduce"] + s["waiting"] - 1) < 1e-5 for s in r["replicas"]), r
t = json.load(open(sys.argv[2]))
assert sum(1 for e in t["traceEvents"] if e["ph"] == "X" and e["cat"] == "step") == 2 * 63, "trace steps"
assert m["strategy"] == "host" and m["replicas"] == 2, m
assert m["devices"] == ["/physical_device:CPU:0"] * 2, m
e = m["epochs"][0]
assert set(e) == {"epoch", "loss", "accuracy", "seconds", "samples_per_second"}, e
assert e["epoch"] == 1 and e["samples_per_second"] > 0 and 0 < e["accuracy"] <= 1, e
assert 0.5 < m["test"]["accuracy"] <= 1, m["test"]
PY
   [ -z "$(find "$work" -maxdepth 1 -name '*m.json.*')" ]
then
  echo "ok: metrics JSON with the step report, trace, no temporary file left"
else
  echo "FAIL: short run or its metrics JSON"; cat "$work/err"
  failures=$((failures + 1))
fi

# The ResNet-style setup of the README on a small run: SGD + Nesterov + cosine with warm-up + global
# clipping + early stopping + a CSV log with one row per epoch.
if "$train_cnn" --verbose 0 --epochs 2 --train-samples 1000 --strategy host --replicas 2 --optimizer sgd --momentum 0.9 \
     --nesterov --schedule cosine --warmup-steps 5 --clipnorm 1 --weight-decay 0.0001 --early-stopping-patience 1 \
     --validation-split 0.2 --csv-log "$work/log.csv" >"$work/out" 2>"$work/err" &&
   [ "$(wc -l <"$work/log.csv")" -eq 3 ] && head -1 "$work/log.csv" | grep -q "^epoch,accuracy,learning_rate,loss,val_accuracy,val_loss$"; then
  echo "ok: sgd + nesterov + cosine warm-up + clipnorm + early stopping + CSV log"
else
  echo "FAIL: the training-controls run"; cat "$work/err" "$work/log.csv"
  failures=$((failures + 1))
fi

# A signal after training, during the evaluation of the test set: the run ends with 130 / 143 and
# says what it was doing and that the weights were not saved (nothing half-written is left); the
# backup of the trained model finishes the run without training again. The signal goes once the
# end-of-fit report is out (stdout line-buffered), i.e. after fit's last step; a test set of large
# images (made here, 35 MB) keeps the evaluation going for about a second.
python3 - "$work/big" <<'PY'
import os, struct, sys
os.makedirs(sys.argv[1])
for prefix, count in (("train", 64), ("t10k", 5000)):
    n = count * 84 * 84
    with open(f"{sys.argv[1]}/{prefix}-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">4B3I", 0, 0, 8, 3, count, 84, 84) + (bytes(range(0, 256, 7)) * (n // 37 + 1))[:n])
    with open(f"{sys.argv[1]}/{prefix}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">4BI", 0, 0, 8, 1, count) + bytes(i % 10 for i in range(count)))
PY
set -m  # job control: a background job keeps SIGINT
for signal in INT TERM; do
  dir="$work/after-fit-$signal"
  mkdir -p "$dir"
  run=("$train_cnn" --data "$work/big" --verbose 1 --epochs 1 --strategy host --replicas 1 --threads 1
       --backup-dir "$dir/backups" --save "$dir/m.keras" --metrics-json "$dir/m.json")
  stdbuf -oL "${run[@]}" >"$dir/out" 2>"$dir/err" &
  pid=$!
  for _ in $(seq 1 6000); do grep -Eq "^  [0-9]+ samples/s$" "$dir/out" 2>/dev/null && break; sleep 0.005; done
  kill "-$signal" "$pid"
  wait "$pid"
  code=$?
  expected=$([ "$signal" = INT ] && echo 130 || echo 143)
  if [ "$code" -eq "$expected" ] &&
     grep -q "^train_cnn: SIG$signal while evaluating the test set; the trained weights were not saved to $dir/m.keras; a backup of them is in $dir/backups" "$dir/err" &&
     [ -z "$(find "$dir" -maxdepth 1 -name 'm.*')" ] &&
     "${run[@]}" >"$dir/out2" 2>"$dir/err2" && grep -q "continuing from the backup" "$dir/out2" &&
     ! grep -q "^Epoch" "$dir/out2" && [ -f "$dir/m.keras" ] && [ -f "$dir/m.json" ]; then
    echo "ok: SIG$signal while evaluating the test set -> $code, said so, saved nothing; the backup finished the run"
  else
    echo "FAIL: SIG$signal while evaluating the test set: exit $code (want $expected), stderr:"; cat "$dir/err"
    ls -a "$dir"; cat "$dir/out2" "$dir/err2" 2>/dev/null
    failures=$((failures + 1))
  fi
done
set +m

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
