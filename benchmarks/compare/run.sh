#!/usr/bin/env bash
# The reference job side by side: Mirror (build/examples/train_cnn), Keras on TensorFlow-CPU and
# PyTorch-CPU, on this machine, in one run, same data, model, optimizer, batch, epochs and threads.
#
#   benchmarks/compare/run.sh [--epochs 2] [--runs 3] [--threads 2]
#                             [--frameworks mirror,mirror-2x1,keras,keras-xla,pytorch,pytorch-compile,pytorch-compile-cl]
#                             [--build-dir build] [--data DIR (default $MIRROR_DATA_DIR or Debian's fashion-mnist)] [--out FILE]
#                             [--train-samples N  (a quick try on part of the data)]
#
# Creates .venv-compare/ (git-ignored) with the pinned versions of requirements.txt on first use
# (about 4 GB: PyPI's torch brings its CUDA libraries) and reuses it while the pins are unchanged.
# Builds train_cnn with Meson when it is missing. Prints progress per run, then the table; every
# record goes to build-compare/results.json. Heavy (minutes): kept out of CI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

build_dir=build
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) build_dir="$2"; shift 2 ;;
    --build-dir=*) build_dir="${1#*=}"; shift ;;
    -h|--help) sed -n '2,13p' "$here/run.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done

# ---- what a fresh machine lacks: Mirror's build prerequisites, Python's venv module ----
scripts/setup.sh "$build_dir"
python=${PYTHON:-python3}
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q python3-venv
fi

# ---- the Python environment, pinned ----
venv="$root/.venv-compare"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "Setting up $venv with benchmarks/compare/requirements.txt (TensorFlow-CPU, Keras, PyTorch)..."
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" > "$stamp"
fi

# ---- Mirror's train_cnn ----
train_cnn="$root/$build_dir/examples/train_cnn"
if [[ ! -x "$train_cnn" ]]; then
  echo "Building $train_cnn..."
  meson compile -C "$build_dir" examples/train_cnn
fi

echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$venv/bin/python" "$here/compare.py" --train-cnn "$train_cnn" --python "$venv/bin/python" "${args[@]}"
