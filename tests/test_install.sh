#!/usr/bin/env bash
# tests/test_install.sh — `cmake --install` puts a working aioshell in a prefix: it runs from
# another directory with no LUA_PATH (the aio modules are embedded), and the installed aio.so
# serves a stock lua5.4. Uses the build of $AIOSHELL (default build/aioshell).
set -eu
cd "$(dirname "$0")/.."
bin=${AIOSHELL:-build/aioshell}
builddir=$(cd "$(dirname "$bin")" && pwd)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$builddir" --prefix "$prefix" >/dev/null
cd /
out=$(env -u LUA_PATH -u LUA_INIT "$prefix/bin/aioshell" -E -e '
  local aio = require "aio"
  local t = aio.spawn(function() aio.sleep(0.01) return "task ok" end)
  print(t:await(), type(require("aio.http")))')
[ "$out" = "task ok	table" ] || { echo "installed aioshell printed: $out"; exit 1; }
[ -f "$prefix/share/aioshell/scripts/hello_tasks.lua" ] || { echo "scripts not installed"; exit 1; }
if [ -f "$prefix/lib/lua/5.4/aio.so" ] && [ -z "${ASAN_OPTIONS:-}" ]; then
  out=$(LUA_CPATH="$prefix/lib/lua/5.4/?.so" lua5.4 -e '
    print(require("aio").run(function() return "module ok" end))')
  [ "$out" = "module ok" ] || { echo "installed aio.so printed: $out"; exit 1; }
fi
echo "install ok"
