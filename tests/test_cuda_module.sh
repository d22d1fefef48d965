#!/usr/bin/env bash
# A CUDA build where the CUDA libraries are missing or of another major version. libmirror itself
# must need none of them; the CUDA module is copied and patched to need libcudnn.so.99 instead of
# the cuDNN it was linked with (the situation of a machine with another cuDNN major version), and
# MIRROR_CUDA_MODULE points Mirror at the copy: list_devices must name the library, the version
# found and the fix; train_cnn must still train on the CPU; a GPU asked for must be refused with
# a reason. A module that is not there at all is named as such.
# Usage: test_cuda_module.sh BUILD_DIR PATCHELF
set -u
build=$(cd "$1" && pwd)
patchelf="$2"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

core=$(ls "$build"/libmirror.so.*.*.* | head -n 1)
module=$(ls "$build"/libmirror_cuda.so.*.*.* | head -n 1)
[ -f "$module" ] || { echo "FAIL: no CUDA module in $build"; exit 1; }
if needed "$core" | grep -Eq 'libcudart|libcublas|libcudnn|libnccl|libcuda\.so'; then
  fail "$core needs CUDA libraries: $(needed "$core" | tr '\n' ' ')"
else
  echo "ok: $(basename "$core") needs no CUDA library ($(needed "$core" | tr '\n' ' '))"
fi

cudnn=$(needed "$module" | grep -E '^libcudnn\.so\.[0-9]+$' | head -n 1)
[ -n "$cudnn" ] || { echo "FAIL: the module needs no libcudnn.so.N: $(needed "$module" | tr '\n' ' ')"; exit 1; }
cp "$module" "$work/libmirror_cuda.so"
"$patchelf" --replace-needed "$cudnn" libcudnn.so.99 "$work/libmirror_cuda.so" || { echo "FAIL: patchelf"; exit 1; }
export MIRROR_CUDA_MODULE="$work/libmirror_cuda.so"

"$build/examples/list_devices" >"$work/list" 2>&1
code=$?
cat "$work/list"
[ "$code" -eq 0 ] || fail "list_devices exited $code with a module it cannot load"
grep -q "needs libcudnn.so.99 (cuDNN 99), which the dynamic loader cannot find" "$work/list" ||
  fail "list_devices does not name the missing library"
grep -q "found $cudnn in " "$work/list" || fail "list_devices does not name the $cudnn it found"
grep -q "pip install nvidia-cudnn-cu" "$work/list" || fail "list_devices does not say how to install cuDNN"

if "$build/examples/train_cnn" --verbose 0 --train-samples 256 --epochs 1 >"$work/train" 2>&1; then
  echo "ok: train_cnn trains on the CPU with a module it cannot load"
else
  cat "$work/train"
  fail "train_cnn failed with a module it cannot load"
fi
"$build/examples/train_cnn" --verbose 0 --train-samples 64 --require-gpu >"$work/gpu" 2>&1
code=$?
if [ "$code" -eq 0 ] || ! grep -Eq "no NVIDIA driver found|libcudnn.so.99" "$work/gpu"; then
  cat "$work/gpu"
  fail "train_cnn --require-gpu exited $code without naming why no GPU can be used"
else
  echo "ok: train_cnn --require-gpu -> $code: $(grep -Eo 'no NVIDIA driver found|needs libcudnn.so.99' "$work/gpu" | head -n 1)"
fi

MIRROR_CUDA_MODULE="$work/absent/libmirror_cuda.so" "$build/examples/list_devices" >"$work/absent" 2>&1
grep -q "the CUDA module $work/absent/libmirror_cuda.so was not found" "$work/absent" ||
  { cat "$work/absent"; fail "list_devices does not say the module is missing"; }

finish
