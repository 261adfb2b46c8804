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
#
# On a sanitizer build (ASAN_OPTIONS set), every process's reports (a leak at exit, an ASan
# error) go to a file of its own under $TEST_LOGS/sanitizer/, named after the spec file or test
# program that ran it, and each such file is one more failure of that file: a leak in a child
# whose exit status no test looks at still fails the run.
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

SANLOGS=""
if [ -n "${ASAN_OPTIONS:-}" ]; then
  SANLOGS=$LOGS/sanitizer
  rm -rf "$SANLOGS"
  mkdir -p "$SANLOGS"
  asan_base=$ASAN_OPTIONS
fi

# Sends the sanitizer reports of what runs next to $SANLOGS/$1.PID (on sanitizer builds).
sanitize_as() {
  if [ -n "$SANLOGS" ]; then export ASAN_OPTIONS="$asan_base:log_path=$SANLOGS/$1"; fi
}

# Prints how many sanitizer report files the run named $1 left (0 on other builds).
reports_of() {
  if [ -n "$SANLOGS" ]; then find "$SANLOGS" -name "$1.*" | wc -l | tr -d ' '; else echo 0; fi
}

# Shows each report the run named $1 left: its first lines (what, and the top of the stack).
show_reports() {
  local r
  for r in "$SANLOGS/$1".*; do
    [ -f "$r" ] || continue
    echo "    sanitizer report $r:"
    grep -m 12 -E '^(==|SUMMARY|Direct|Indirect|    #[0-9] )' "$r" | sed 's/^/      /'
  done
}

# Seconds since $1 (an $EPOCHREALTIME), one decimal.
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
failed_files=()

# Adds one file's counts and prints its summary line. Args: name, pass, fail, skip, rc, seconds,
# sanitizer reports (each one a failure).
tally() {
  local name=$1 p=$2 f=$3 s=$4 rc=$5 secs=$6 reports=${7:-0} note=""
  if [ "$reports" != 0 ]; then
    note=" ($reports sanitizer report(s) in $SANLOGS/)"; f=$((f + reports))
  fi
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
  name=$(basename "$spec" .lua)
  log=$LOGS/$name.log
  start=$EPOCHREALTIME
  sanitize_as "$name"
  timeout -k 10 "$TIMEOUT" "$BUSTED" --lua="$AIOSHELL" -o TAP "$spec" >"$log" 2>&1 </dev/null
  rc=$?
  secs=$(elapsed "$start")
  p=$(grep -cE '^ok [0-9]+ - ' "$log" | tr -d ' ')
  s=$(grep -cE '^ok [0-9]+ - # SKIP' "$log" | tr -d ' ')
  f=$(grep -cE '^not ok [0-9]+ ' "$log" | tr -d ' ')
  p=$((p - s))
  reports=$(reports_of "$name")
  tally "$spec" "$p" "$f" "$s" "$rc" "$secs" "$reports"
  if [ "$f" != 0 ] || [ "$rc" != 0 ]; then  # show what failed, not the whole log
    grep -E -A12 '^not ok ' "$log" | head -60 | sed 's/^/    /'
    [ "$f" = 0 ] && [ "$reports" = 0 ] && tail -20 "$log" | sed 's/^/    /'
  fi
  show_reports "$name"
done

# Stand-alone test programs (only when running the default full suite).
if [ $# -eq 0 ] && [ -d tests ]; then
  while IFS= read -r prog; do
    name=$(echo "$prog" | tr '/' '_')
    log=$LOGS/$name.log
    start=$EPOCHREALTIME
    sanitize_as "$name"
    case $prog in
      *.lua) timeout -k 10 "$TIMEOUT" "$AIOSHELL" "$prog" >"$log" 2>&1 </dev/null ;;
      *) timeout -k 10 "$TIMEOUT" bash "$prog" >"$log" 2>&1 </dev/null ;;
    esac
    rc=$?
    secs=$(elapsed "$start")
    reports=$(reports_of "$name")
    if [ $rc = 0 ] && [ "$reports" = 0 ]; then tally "$prog" 1 0 0 0 "$secs"
    else tally "$prog" 0 $((rc != 0)) 0 "$rc" "$secs" "$reports"; tail -20 "$log" | sed 's/^/    /'; fi
    show_reports "$name"
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
