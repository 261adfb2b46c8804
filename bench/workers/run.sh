#!/bin/sh
# bench/workers/run.sh — thread and process pools against CPython and Node (see run.py).
# Uses $AIOSHELL, else build/aioshell. --quick: one run of each; --only a|b picks a case.
exec /usr/bin/python3 "$(dirname "$0")/run.py" "$@"
