#!/bin/sh
# bench/http/instructions.sh [AIOSHELL] [N] — CPU per request as instructions (load-insensitive):
# one aioshell process serves N keep-alive GETs at delay 0 (hello_server.lua) to one aioshell
# client making them one at a time (client.lua, C=1), both under callgrind. Prints the
# instructions (Ir) of the server process and of the client process.
set -e
here=$(cd "$(dirname "$0")" && pwd)
aioshell=$(realpath "${1:-$here/../../build/aioshell}")
n=${2:-5000}
tmp=$(mktemp -d)
port=$((30000 + $(od -An -N2 -tu2 /dev/urandom) % 20000))
valgrind --tool=callgrind --callgrind-out-file="$tmp/server.out" \
  "$aioshell" "$here/hello_server.lua" "$port" "$n" >"$tmp/server.log" 2>&1 &
spid=$!
i=0
until curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 300 ] || { echo "server did not start" >&2; kill $spid; exit 1; }
  sleep 0.1
done
valgrind --tool=callgrind --callgrind-out-file="$tmp/client.out" \
  "$aioshell" "$here/client.lua" "http://127.0.0.1:$port/" $((n - 1)) 1 >"$tmp/client.log" 2>&1
wait $spid
ir() { awk '/^summary:/ { print $2 }' "$1"; }
echo "server Ir $(ir "$tmp/server.out")  client Ir $(ir "$tmp/client.out")  ($(grep RESULT "$tmp/client.log"))"
rm -rf "$tmp"
