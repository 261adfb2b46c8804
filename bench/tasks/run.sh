#!/bin/sh
# bench/tasks/run.sh — aioshell's tasks against CPython asyncio, asyncio+uvloop, Node and bare
# Lua 5.4 coroutines, side by side, printing Markdown tables with ratios. Options: see
# `bench/tasks/run.sh --help` (--quick for one run of each; --only abcd picks cases).
# Uses $AIOSHELL, else build/aioshell; /usr/bin/python3; node and lua5.4 from PATH.
exec /usr/bin/python3 "$(dirname "$0")/run.py" "$@"
