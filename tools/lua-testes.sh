#!/usr/bin/env bash
# tools/lua-testes.sh — runs the official Lua 5.4 test suite (lua-5.4.4-tests.tar.gz from
# https://www.lua.org/tests/, or the testes/ folder of the lua/lua repository; not shipped here:
# bring your own copy) under lua5.4 and under the interpreter being tested, and prints the
# results side by side, then one summary line.
#
#   tools/lua-testes.sh DIR [INTERP [file.lua ...]]
#
# DIR is the unpacked suite; INTERP defaults to build/aioshell next to this script. First
# all.lua runs the whole suite in user mode (`-e _U=true all.lua`, as the suite's README says
# for an installed interpreter: no internal T library, soft and portable mode, so main.lua is
# skipped there); then each file runs on its own (plain `INTERP file.lua`: main.lua, which
# tests the stand-alone interpreter named by its arg[-1], runs in full). Without file names,
# every *.lua of DIR is run on its own except the helpers (bwcoercion.lua, tracegc.lua),
# heavy.lua (needs gigabytes) and big.lua (runs only as a coroutine, from all.lua).
#
# Every run is from inside DIR with an empty pipe as stdin (files.lua wants a stdin that cannot
# seek); libs/P1 is created if missing (attrib.lua writes modules there). When INTERP can
# `require "aio"`, a third column runs it with `-l aio` (the await-aware coroutine functions).
# A run passes when it exits 0. A row is a deviation when lua5.4 passes and INTERP does not,
# or when both fail with different messages (program name left out); failing under both with
# the same message is the baseline (a copy newer than the installed lua5.4, a missing C test
# library). Exit status 1 if there is a deviation. Environment: LUA54 (default lua5.4),
# TIMEOUT per run in seconds (default 300), KEEP_LOGS=DIR to keep every run's output there.
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: tools/lua-testes.sh DIR [INTERP [file.lua ...]]"
dir=${1:?$usage}
shift
interp=${1:-$here/build/aioshell}
[ $# -gt 0 ] && shift
case $interp in /*) ;; */*) interp=$PWD/$interp ;; esac
lua54=${LUA54:-lua5.4}
limit=${TIMEOUT:-300}
log=${KEEP_LOGS:-$(mktemp -d)}
mkdir -p "$log" && log=$(cd "$log" && pwd)
[ -n "${KEEP_LOGS:-}" ] || trap 'rm -rf "$log"' EXIT
cd "$dir" || exit 2
mkdir -p libs/P1

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  for f in *.lua; do
    case $f in all.lua|bwcoercion.lua|tracegc.lua|heavy.lua|big.lua) ;; *) files+=("$f") ;; esac
  done
fi

# run TAG FILE CMD...: runs CMD with a time limit, output in $log/TAG.{out,err}; prints
# "pass", "FAIL n", "timeout" or "missing".
run() {
  local tag=$1 file=$2
  shift 2
  if [ ! -f "$file" ]; then echo missing; return; fi
  : | timeout "$limit" "$@" > "$log/$tag.out" 2> "$log/$tag.err"
  local st=$?
  case $st in 0) echo pass ;; 124) echo timeout ;; *) echo "FAIL $st" ;; esac
}

# message TAG PROG: the first error line PROG wrote for run TAG, without the "PROG: " prefix.
message() {
  grep -m1 -F "$2: " "$log/$1.err" | sed "s|^.*$2: ||"
}

# verdict TAG A B WHICH: "ok", "baseline" or "DEVIATION" for result A of lua5.4 and result B
# of run TAG.WHICH (INTERP, plain or with -l aio).
verdict() {
  local tag=$1 a=$2 b=$3 which=$4
  if [ "$b" = pass ]; then echo ok
  elif [ "$a" = pass ] || [ "$a" = missing ]; then echo DEVIATION
  elif [ "$(message "$tag.lua54" "$lua54")" = "$(message "$tag.$which" "$interp")" ]; then
    echo baseline
  else echo DEVIATION
  fi
}

# worst V1 V2: the worse of two verdicts.
worst() {
  case "$1 $2" in *DEVIATION*) echo DEVIATION ;; *baseline*) echo baseline ;; *) echo ok ;; esac
}

laio=0
"$interp" -e 'require "aio"' < /dev/null > /dev/null 2>&1 && laio=1
name=$(basename "$interp")
printf '%-18s %-10s %-10s' run lua5.4 "$name"
[ $laio = 1 ] && printf ' %-14s' "$name -l aio"
printf ' %s\n' verdict

runs=0 pass54=0 passi=0 passl=0 deviations=0
# row LABEL FILE ARGS...: runs ARGS FILE under each interpreter and prints one row.
row() {
  local label=$1 file=$2 tag=${1//[^A-Za-z0-9_.]/_}
  shift 2
  local a b c="" v
  a=$(run "$tag.lua54" "$file" "$lua54" "$@" "$file")
  b=$(run "$tag.interp" "$file" "$interp" "$@" "$file")
  v=$(verdict "$tag" "$a" "$b" interp)
  if [ $laio = 1 ]; then
    c=$(run "$tag.laio" "$file" "$interp" -l aio "$@" "$file")
    [ "$c" = pass ] && passl=$((passl + 1))
    v=$(worst "$v" "$(verdict "$tag" "$a" "$c" laio)")
  fi
  runs=$((runs + 1))
  [ "$a" = pass ] && pass54=$((pass54 + 1))
  [ "$b" = pass ] && passi=$((passi + 1))
  printf '%-18s %-10s %-10s' "$label" "$a" "$b"
  [ $laio = 1 ] && printf ' %-14s' "$c"
  printf ' %s\n' "$v"
  if [ "$v" = DEVIATION ]; then
    deviations=$((deviations + 1))
    for m in lua54 interp laio; do
      [ -f "$log/$tag.$m.err" ] && tail -n 3 "$log/$tag.$m.err" | awk -v m="$m" '{print "    " m ": " $0}'
    done
  elif [ "$v" = baseline ]; then
    echo "    both: $(message "$tag.lua54" "$lua54")"
  fi
}

row "all.lua (_U)" all.lua -e _U=true
for f in "${files[@]}"; do row "$f" "$f"; done

summary="lua-testes: $runs runs; lua5.4 passed $pass54, $name passed $passi"
[ $laio = 1 ] && summary="$summary, $name -l aio passed $passl"
echo "$summary; deviations: $deviations"
[ $deviations -eq 0 ]
