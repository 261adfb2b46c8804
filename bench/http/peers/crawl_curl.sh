#!/usr/bin/env bash
# curl's own parallel transfers (the curl tool: C, libcurl's multi interface, no interpreter):
# the fastest a libcurl-based client gets on this machine, as a reference for aioshell's client.
# crawl_curl.sh BASE_URL N C  -> "RESULT bytes seconds bad"
# The time is the curl process's wall time, start-up included (a few ms); C is capped at 300
# by curl itself, so run it bounded only.
set -eu
base=$1 n=$2 c=$3
cfg=$(mktemp)
out=$(mktemp)
trap 'rm -f "$cfg" "$out"' EXIT
letters=abcdefghijklmnopqrstuvwxyz
for ((i = 0; i < n; i++)); do
  name=""
  for ((k = 0; k < 10; k++)); do name+=${letters:RANDOM%26:1}; done
  printf 'url = "%s%s"\noutput = "/dev/null"\n' "$base" "$name" >> "$cfg"
done
t0=$(date +%s.%N)
curl -s --no-progress-meter --parallel --parallel-max "$c" --parallel-immediate -w '%{http_code} %{size_download}\n' -K "$cfg" > "$out"
t1=$(date +%s.%N)
awk -v t0="$t0" -v t1="$t1" '{ bytes += $2; if ($1 != 200) bad++ }
  END { printf "RESULT\t%d\t%.4f\t%d\n", bytes, t1 - t0, bad + 0 }' "$out"
