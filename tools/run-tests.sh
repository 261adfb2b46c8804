#!/usr/bin/env bash
# tools/run-tests.sh — runs the whole test suite and prints "N passed, N failed" last.
#
#   tools/run-tests.sh [spec/foo_spec.lua ...]     (default: every spec/*_spec.lua)
#
# Each spec file runs in its own busted process under the aioshell being tested
# (busted --lua=$AIOSHELL -o TAP), bounded by `timeout`, so a hang or a crash costs one file,
# never the run: a file that times out or exits non-zero without a failing test counts as one
# failure. Test programs tests/**/test_*.sh (bash) and tests/**/test_*.lua (aioshell) count
# as one test each, passed when they exit 0. Logs go to $TEST_LOGS (build/test-logs).
# Environment: AIOSHELL (build/aioshell), TEST_TIMEOUT (seconds per file, 120), BUSTED (busted).
set -u
cd "$(dirname "$0")/.." || exit 2
root=$PWD
AIOSHELL=${AIOSHELL:-build/aioshell}
case $AIOSHELL in /*) ;; */*) AIOSHELL=$root/$AIOSHELL ;; esac
export AIOSHELL
TIMEOUT=${TEST_TIMEOUT:-120}
BUSTED=${BUSTED:-busted}
LOGS=${TEST_LOGS:-build/test-logs}
mkdir -p "$LOGS"

if [ ! -x "$AIOSHELL" ]; then
  echo "run-tests: $AIOSHELL is not built (run: make)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

passed=0 failed=0 skipped=0

# Seconds since $1 (an $EPOCHREALTIME), one decimal.
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
failed_files=()

# Adds one file's counts and prints its summary line. Args: name, pass, fail, skip, rc, seconds.
tally() {
  local name=$1 p=$2 f=$3 s=$4 rc=$5 secs=$6 note=""
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    note=" (timed out after ${TIMEOUT}s)"; f=$((f + 1))
  elif [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    note=" (exit status $rc without a failing test: crash or load error)"; f=$((f + 1))
  fi
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  [ "$f" != 0 ] && failed_files+=("$name")
  printf '%-40s %4d passed, %d failed%s  %ss%s\n' "$name" "$p" "$f" \
    "$([ "$s" != 0 ] && echo ", $s skipped")" "$secs" "$note"
}

if [ $# -gt 0 ]; then specs=("$@"); else specs=(spec/*_spec.lua); fi
for spec in "${specs[@]}"; do
  [ -f "$spec" ] || continue
  log=$LOGS/$(basename "$spec" .lua).log
  start=$EPOCHREALTIME
  timeout -k 10 "$TIMEOUT" "$BUSTED" --lua="$AIOSHELL" -o TAP "$spec" >"$log" 2>&1 </dev/null
  rc=$?
  secs=$(elapsed "$start")
  p=$(grep -cE '^ok [0-9]+ - ' "$log" | tr -d ' ')
  s=$(grep -cE '^ok [0-9]+ - # SKIP' "$log" | tr -d ' ')
  f=$(grep -cE '^not ok [0-9]+ ' "$log" | tr -d ' ')
  p=$((p - s))
  tally "$spec" "$p" "$f" "$s" "$rc" "$secs"
  if [ "$f" != 0 ] || [ "$rc" != 0 ]; then  # show what failed, not the whole log
    grep -E -A12 '^not ok ' "$log" | head -60 | sed 's/^/    /'
    [ "$f" = 0 ] && tail -20 "$log" | sed 's/^/    /'
  fi
done

# Stand-alone test programs (only when running the default full suite).
if [ $# -eq 0 ] && [ -d tests ]; then
  while IFS= read -r prog; do
    log=$LOGS/$(echo "$prog" | tr '/' '_').log
    start=$EPOCHREALTIME
    case $prog in
      *.lua) timeout -k 10 "$TIMEOUT" "$AIOSHELL" "$prog" >"$log" 2>&1 </dev/null ;;
      *) timeout -k 10 "$TIMEOUT" bash "$prog" >"$log" 2>&1 </dev/null ;;
    esac
    rc=$?
    secs=$(elapsed "$start")
    if [ $rc = 0 ]; then tally "$prog" 1 0 0 0 "$secs"
    else tally "$prog" 0 1 0 "$rc" "$secs"; tail -20 "$log" | sed 's/^/    /'; fi
  done < <(find tests -type f \( -name 'test_*.sh' -o -name 'test_*.lua' \) | sort)
fi

if [ ${#failed_files[@]} -gt 0 ]; then
  echo "failed: ${failed_files[*]} (logs in $LOGS/)"
fi
if [ "$skipped" != 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" = 0 ] && [ "$passed" != 0 ]
