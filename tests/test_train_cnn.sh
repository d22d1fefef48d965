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
  if [ "$got" -ne "$code" ] || ! grep -Eq "$pattern" "$work/err"; then
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
expect 2 "batch_size" --batch-size 0 --train-samples 64
expect 2 "batch_size" --batch-size -3 --train-samples 64
expect 2 "unknown flag" --bogus 1
expect 2 "needs a number" --epochs two
expect 1 "label [0-9]+ at index [0-9]+ .* outside \[0, 5\)" --classes 5 --train-samples 64
# Without a GPU, requiring one is an error that says why (with one, there is nothing to refuse).
if ! "$(dirname "$train_cnn")/list_devices" 2>/dev/null | grep -q "device_type='GPU'"; then
  expect 1 "a GPU is required .* none is usable" --require-gpu --train-samples 64
  MIRROR_REQUIRE_GPU=1 expect 1 "a GPU is required" --train-samples 64
fi

# A short real run writes the metrics JSON. --strategy host: --replicas counts host replicas, and on
# a machine with a GPU the automatic choice would be a GPU strategy.
if "$train_cnn" --verbose 0 --epochs 1 --train-samples 2000 --strategy host --replicas 2 --metrics-json "$work/m.json" >"$work/out" 2>"$work/err" &&
   python3 - "$work/m.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
assert m["strategy"] == "host" and m["replicas"] == 2, m
assert m["devices"] == ["/physical_device:CPU:0"] * 2, m
e = m["epochs"][0]
assert set(e) == {"epoch", "loss", "accuracy", "seconds", "samples_per_second"}, e
assert e["epoch"] == 1 and e["samples_per_second"] > 0 and 0 < e["accuracy"] <= 1, e
assert 0.5 < m["test"]["accuracy"] <= 1, m["test"]
PY
then
  echo "ok: metrics JSON"
else
  echo "FAIL: short run or its metrics JSON"; cat "$work/err"
  failures=$((failures + 1))
fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
