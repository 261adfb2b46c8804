#!/bin/sh
# bench/rx/run.sh [N] [ROUNDS] — aio.rx vs RxPY 3 (python3-rx) in one run; prints a Markdown table.
here=$(dirname "$0")
exec "${AIOSHELL:-$here/../../build/aioshell}" "$here/run.lua" "$@"
