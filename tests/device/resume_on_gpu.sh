#!/usr/bin/env bash
# A backup taken on the host strategy, continued on the GPU: train_cnn on the host is stopped by
# SIGINT once it has written its first backup (exit 130); the same command with --strategy
# one-device --require-gpu continues from that backup on the GPU and finishes.
# Usage: resume_on_gpu.sh TRAIN_CNN BACKUP_DIR METRICS_JSON
set -u
train_cnn=$1 dir=$2 metrics=$3
rm -rf "$dir" "$metrics"
args=(--epochs 1 --train-samples 12000 --verbose 2 --seed 3 --backup-dir "$dir" --backup-every-steps 100)
set -m  # job control: the background run keeps SIGINT
"$train_cnn" --strategy host "${args[@]}" &
pid=$!
for _ in $(seq 1 3000); do
  ls "$dir" 2>/dev/null | grep -q '^backup-' && break
  sleep 0.01
done
kill -INT "$pid"
wait "$pid"
code=$?
[ "$code" -eq 130 ] || { echo "the host run exited $code, not 130 (stopped by SIGINT after a backup)"; exit 1; }
echo "host run: stopped by SIGINT with backups: $(ls "$dir" | tr "\n" " ")"
"$train_cnn" --strategy one-device --require-gpu "${args[@]}" --metrics-json "$metrics" >"$dir.gpu.log" 2>&1
code=$?
tail -n 4 "$dir.gpu.log"
[ "$code" -eq 0 ] || { echo "the GPU run exited $code"; exit 1; }
grep -q "continuing from the backup" "$dir.gpu.log" || { echo "the GPU run did not continue from the host's backup"; exit 1; }
