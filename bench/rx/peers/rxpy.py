#!/usr/bin/python3
"""bench/rx/peers/rxpy.py — the aio.rx workloads on RxPY 3 (Debian's python3-rx).

Prints one JSON object: {workload: seconds} (median of --rounds), or {"error": why}.
"""
import json
import statistics
import sys
import time

try:
    import rx
    from rx import operators as ops
    from rx.subject import Subject
except ImportError as e:  # python3-rx not installed
    print(json.dumps({"error": "RxPY not installed (apt-get install python3-rx): %s" % e}))
    sys.exit(0)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def pipeline():
    out = []
    rx.range(1, N + 1).pipe(ops.map(lambda x: x * 2), ops.filter(lambda x: x % 3 == 0),
                            ops.scan(lambda a, b: a + b), ops.count()).subscribe(out.append)
    assert out == [N // 3], out


def subject_fanout():
    s = Subject()
    c = [0]

    def inc(_):
        c[0] += 1
    for _ in range(10):
        s.subscribe(inc)
    for i in range(N // 10):
        s.on_next(i)
    assert c[0] == N, c


def group_merge():
    out = []
    rx.range(0, N // 10).pipe(ops.group_by(lambda x: x % 10), ops.merge_all(), ops.count()).subscribe(out.append)
    assert out == [N // 10], out


def sliding_window():
    out = []
    rx.range(0, N // 10).pipe(ops.buffer_with_count(10, 1), ops.count()).subscribe(out.append)
    assert out == [N // 10], out


def take_of_huge():
    out = []
    rx.range(0, 10 ** 9).pipe(ops.take(5)).subscribe(out.append)
    assert out == [0, 1, 2, 3, 4], out


WORKLOADS = [("pipeline", pipeline), ("subject_fanout", subject_fanout), ("group_merge", group_merge),
             ("sliding_window", sliding_window), ("take_of_huge", take_of_huge)]

result = {}
for name, fn in WORKLOADS:
    times = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    result[name] = statistics.median(times)
print(json.dumps(result))
