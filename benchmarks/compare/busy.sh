#!/usr/bin/env bash
# The reference job on an idle and on a busy machine (two processes spinning beside it), Mirror
# and PyTorch in one run: what a busy machine costs each (busy.py). Heavy (minutes): kept out of CI.
#
#   benchmarks/compare/busy.sh [--mirror LABEL=TRAIN_CNN ...] [--runs 5] [--train-samples 6400]
#                              [--threads 2] [--busy 2] [--frameworks pytorch] [--out FILE]
#
# Uses .venv-compare/ as run.sh makes it (run.sh once first); builds train_cnn when no --mirror is given.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
case "${1:-}" in -h|--help) sed -n '2,8p' "$here/busy.sh" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

venv="$root/.venv-compare"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "No $venv yet: benchmarks/compare/run.sh makes it (about 4 GB)" >&2
  exit 2
fi
if [[ " $* " != *" --mirror "* && ! -x build/examples/train_cnn ]]; then
  meson compile -C build examples/train_cnn
fi
exec "$venv/bin/python" "$here/busy.py" --python "$venv/bin/python" "$@"
