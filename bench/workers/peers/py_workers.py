"""bench/workers/peers/py_workers.py — the CPython side of the workers benchmark.

python3 py_workers.py CASE [N]; prints `key=value` figures on one line.
  sumsq_serial | sumsq_threads | sumsq_procs      (ThreadPoolExecutor(5) as in the notebook,
                                                   multiprocessing.Pool(cpu_count))
  tiny_threads | tiny_procs | tiny_pool_map1 | tiny_pool_map   N tiny jobs (x * 2)
"""
import concurrent.futures
import multiprocessing
import os
import sys
import time


def cpu_bound(number):
    return sum(i * i for i in range(number))


def double(x):
    return x * 2


def main():
    case = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else None
    cores = os.cpu_count()
    numbers = [(n or 5_000_000) + x for x in range(20)]
    t0 = time.perf_counter()
    if case == "sumsq_serial":
        for number in numbers:
            cpu_bound(number)
    elif case == "sumsq_threads":
        with concurrent.futures.ThreadPoolExecutor(max_workers=5) as ex:
            list(ex.map(cpu_bound, numbers))
    elif case == "sumsq_procs":
        with multiprocessing.Pool(cores) as pool:
            pool.map(cpu_bound, numbers)
    elif case.startswith("tiny_"):
        n = n or 10000
        if case == "tiny_threads":
            ex = concurrent.futures.ThreadPoolExecutor(max_workers=cores)
        elif case == "tiny_procs":
            ex = concurrent.futures.ProcessPoolExecutor(max_workers=cores)
        else:
            ex = multiprocessing.Pool(cores)
        if case in ("tiny_threads", "tiny_procs"):
            ex.submit(double, 1).result()
            t0 = time.perf_counter()
            fs = [ex.submit(double, i) for i in range(n)]
            concurrent.futures.wait(fs)
            dt = time.perf_counter() - t0
            ex.shutdown()
        else:
            ex.map(double, [1])
            t0 = time.perf_counter()
            if case == "tiny_pool_map1":
                ex.map(double, range(n), chunksize=1)
            else:
                ex.map(double, range(n))
            dt = time.perf_counter() - t0
            ex.close()
            ex.join()
        print("seconds=%.4f us_per_job=%.3f" % (dt, dt / n * 1e6))
        return
    else:
        raise SystemExit("unknown case " + case)
    print("seconds=%.4f" % (time.perf_counter() - t0))


if __name__ == "__main__":
    main()
