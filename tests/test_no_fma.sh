#!/usr/bin/env bash
# Equal rounding as a property of the build: the library holds no fused multiply-add instruction
# (the build passes -ffp-contract=off, and Mirror's code writes no fma()), so each instruction-set
# variant of the host loops rounds as the baseline does, including variants this machine's CPU
# cannot execute and so test_host_isa cannot run. The variants must be there for this to mean
# anything: the AVX2 and AVX-512 code is looked for too, where the build has variants.
#   tests/test_no_fma.sh LIBMIRROR [variants|single]
set -uo pipefail
source "$(dirname "$0")/lib.sh"
lib="$1"
expect="${2:-variants}"
command -v objdump >/dev/null || { echo "objdump (binutils) is needed"; exit 1; }
objdump -d --no-show-raw-insn "$lib" > "$work/asm" || { echo "objdump failed on $lib"; exit 1; }

fma=$(grep -E '\svf(n)?m(add|sub|addsub|subadd)[0-9]{3}[ps][sdh]\b' "$work/asm")
if [ -n "$fma" ]; then
  fail "$(printf '%s\n' "$fma" | wc -l) fused multiply-add instructions in $lib, e.g.:"
  grep -E '^[0-9a-f]+ <|\svf(n)?m(add|sub|addsub|subadd)[0-9]{3}[ps][sdh]\b' "$work/asm" |
    grep -B1 -E '\svf(n)?m' | head -6
fi
if [ "$expect" = variants ]; then
  grep -qE '%zmm[0-9]' "$work/asm" || fail "no AVX-512 (zmm) instruction in $lib: the AVX-512 variants are missing"
  grep -qE '%ymm[0-9]' "$work/asm" || fail "no AVX (ymm) instruction in $lib: the AVX2 variants are missing"
fi
finish "no-FMA"
