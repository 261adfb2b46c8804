#!/bin/sh
# tools/install-deps.sh — installs the Debian packages aioshell needs, if any is missing.
#
#   tools/install-deps.sh [build]  what building and running need (the default)
#   tools/install-deps.sh test     that and what the tests need (browser, fonts)
#   tools/install-deps.sh bench    the benchmarks' peers (Python asyncio/uvloop/..., Node, wrk)
#
# The package lists live here and nowhere else. Runs apt-get update once, and only when
# something is missing; works as root or through sudo; does nothing on a machine that has it all.
set -eu

# Build, test and run: compiler and CMake, Lua 5.4, libuv, libcurl, llhttp's C sources (node-llhttp),
# libedit for the REPL, lua-cjson for JSON, busted for the specs, tmux for the REPL's terminal tests,
# python3 (standard library only) for the HTTP specs' raw-socket clients.
BUILD_PACKAGES="build-essential cmake pkg-config liblua5.4-dev lua5.4 libuv1-dev lua-cjson
  lua-busted libcurl4-openssl-dev node-llhttp libedit-dev tmux python3"
# Only for the tests: a real browser renders the notebook report (spec/report_spec.lua), with
# fonts so its text shows (--no-install-recommends would skip them).
TEST_PACKAGES="chromium fonts-liberation"
# The peers bench/ compares against.
BENCH_PACKAGES="python3 python3-tornado python3-aiohttp python3-gevent python3-uvloop
  python3-requests python3-pycurl python3-rx wrk nodejs"

case "${1:-build}" in
  build) wanted=$BUILD_PACKAGES ;;
  test) wanted="$BUILD_PACKAGES $TEST_PACKAGES" ;;
  bench) wanted=$BENCH_PACKAGES ;;
  all) wanted="$BUILD_PACKAGES $TEST_PACKAGES $BENCH_PACKAGES" ;;
  *) echo "usage: $0 [build|test|bench|all]" >&2; exit 2 ;;
esac

missing=""
for p in $wanted; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
if [ -z "$missing" ]; then
  echo "install-deps: all ${1:-build} packages are installed"
  exit 0
fi

if [ "$(id -u)" = 0 ]; then SUDO=""
elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"
else echo "install-deps: missing:$missing (run as root or install sudo)" >&2; exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
