#!/usr/bin/env bash
# GNU OpenMP's spin-wait is bounded in every program linked with libmirror (GOMP_SPINCOUNT=10000,
# set by libmirror_openmp_env's constructor before libgomp reads it) unless the user chose a wait
# policy or a spin count, which then wins. libgomp prints what it uses under OMP_DISPLAY_ENV.
# Usage: test_openmp_env.sh PROGRAM... (each is run with --help)
set -u
failures=0

# expect SPINCOUNT PROGRAM [VAR=VALUE...]: the spin count libgomp reports for PROGRAM in a clean
# environment plus the given variables.
expect() {
  local want="$1" program="$2"
  shift 2
  local got
  got=$(env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_DISPLAY_ENV=verbose "$@" "$program" --help 2>&1 >/dev/null |
    sed -n "s/^ *GOMP_SPINCOUNT = '\([0-9]*\)'.*/\1/p")
  if [ "$got" != "$want" ]; then
    echo "FAIL: $(basename "$program") with [$*]: GOMP_SPINCOUNT is '$got', want '$want'"
    failures=$((failures + 1))
  else
    echo "ok: $(basename "$program") with [$*]: GOMP_SPINCOUNT = $got"
  fi
}

for program in "$@"; do
  expect 10000 "$program"
  expect 1234 "$program" GOMP_SPINCOUNT=1234
  expect 0 "$program" OMP_WAIT_POLICY=passive
  expect 30000000000 "$program" OMP_WAIT_POLICY=active
done
exit $((failures > 0))
