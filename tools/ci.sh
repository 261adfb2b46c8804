#!/usr/bin/env bash
# tools/ci.sh — the CI run after `make test-deps`: Release build + the whole suite, then (unless
# CI_ASAN=0) the ASan+UBSan build + the whole suite again, LeakSanitizer on (every process's
# reports are failures: tools/run-tests.sh). The last line adds both up:
# "N passed, N failed". Exit status non-zero if anything failed or did not build.
set -u
cd "$(dirname "$0")/.." || exit 2
passed=0 failed=0

# Runs a suite (args: label, make target, aioshell path, extra env...) and adds its counts.
suite() {
  local label=$1 target=$2 bin=$3; shift 3
  echo "=== $label: build"
  if ! make --no-print-directory "$target"; then
    echo "$label: build failed"
    failed=$((failed + 1))
    return
  fi
  echo "=== $label: tests"
  local log
  log=$(mktemp)
  env AIOSHELL="$bin" "$@" tools/run-tests.sh 2>&1 | tee "$log"
  local last
  last=$(tail -n 1 "$log")
  rm -f "$log"
  if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
    passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
  else
    echo "$label: no summary line from the test runner"
    failed=$((failed + 1))
  fi
}

start=$SECONDS
suite "release" build build/aioshell
echo "release suite: $((SECONDS - start)) s"
# CI has 90 minutes: the ASan suite (2-3x slower) runs only if the Release one left room.
release_secs=$((SECONDS - start))
if [ "${CI_ASAN:-1}" != 0 ] && [ "$release_secs" -gt 1200 ]; then
  echo "asan suite skipped: the Release suite took ${release_secs}s (run: make asan-test)"
elif [ "${CI_ASAN:-1}" != 0 ]; then
  start=$SECONDS
  suite "asan+ubsan" asan build-asan/aioshell TEST_LOGS=build-asan/test-logs \
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  echo "asan suite: $((SECONDS - start)) s"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" != 0 ]
