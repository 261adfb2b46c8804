"""bench/tasks/peers/asyncio_tasks.py — the CPython asyncio (and asyncio+uvloop) side of
bench/tasks: `python3 asyncio_tasks.py [--uvloop] CASE N [M]`, same cases and output as
bench/tasks/aio_tasks.lua. Times: process CPU (time.process_time) and wall (perf_counter)."""
import asyncio
import gc
import os
import sys
import time


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])


async def work(i):
    await asyncio.sleep(0)
    return i


async def sleeper():
    await asyncio.sleep(3600)


async def switcher(count):
    for _ in range(count):
        await asyncio.sleep(0)


async def main(case, n, m):
    if case == "spawn":
        c0, w0 = time.process_time(), time.perf_counter()
        ts = [asyncio.create_task(work(i)) for i in range(1, n + 1)]
        r = await asyncio.gather(*ts)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        assert r[-1] == n and len(r) == n
        print("cpu=%.6f wall=%.6f" % (cpu, wall))
    elif case == "sleepers":
        gc.collect()
        before = status_kb("VmRSS")
        ts = [asyncio.create_task(sleeper()) for _ in range(n)]
        await asyncio.sleep(0.001)  # every task has run up to its sleep
        print("rss0_kb=%d hwm_kb=%d rss_kb=%d" % (before, status_kb("VmHWM"), status_kb("VmRSS")))
        sys.stdout.flush()
        os._exit(0)  # skip cancelling 100k tasks: not part of the measurement
    elif case == "switch":
        c0, w0 = time.process_time(), time.perf_counter()
        ts = [asyncio.create_task(switcher(m)) for _ in range(n)]
        await asyncio.gather(*ts)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        print("cpu=%.6f wall=%.6f switches=%d" % (cpu, wall, n * m))
    else:
        sys.exit("usage: asyncio_tasks.py [--uvloop] spawn|sleepers|switch N [M]")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--uvloop":
        import uvloop
        uvloop.install()
        args = args[1:]
    asyncio.run(main(args[0], int(args[1]), int(args[2]) if len(args) > 2 else 0))
