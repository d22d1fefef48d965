# What the shell tests share (sourced): a temporary folder `$work`, removed at exit; `fail` records
# a failure with its message; `finish` ends the test, non-zero after any failure.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
finish() {  # finish [WHAT]: "all WHAT checks passed" when none failed
  if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)"
    exit 1
  fi
  echo "all ${1:+$1 }checks passed"
}
