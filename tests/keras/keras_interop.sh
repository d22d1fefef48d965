#!/usr/bin/env bash
# The Keras interoperability test: runs interop.py in a virtual environment with the pinned Keras
# (requirements.txt), created on first use and cached outside the tree, keyed by the requirements'
# hash, in ${MIRROR_KERAS_VENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mirror}. MIRROR_SKIP_KERAS=1 skips it.
# usage: keras_interop.sh PATH/TO/keras_interop
set -euo pipefail

exe="$(realpath "$1")"
here="$(cd "$(dirname "$0")" && pwd)"
if [ "${MIRROR_SKIP_KERAS:-0}" = 1 ]; then
  echo "keras_interop: skipped (MIRROR_SKIP_KERAS=1)"
  exit 77
fi

hash="$(sha256sum "$here/requirements.txt" | cut -c1-16)"
venv="${MIRROR_KERAS_VENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mirror}/keras-venv-$hash"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "keras_interop: creating $venv (first use; about a minute)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$here/requirements.txt"
  touch "$venv/.complete"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
KERAS_BACKEND=jax JAX_PLATFORMS=cpu "$venv/bin/python" "$here/interop.py" "$exe" "$work"
