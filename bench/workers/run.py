"""bench/workers/run.py — aioshell's thread and process pools against CPython and Node.

  bench/workers/run.sh [--quick] [--runs N] [--only ab]

(a) sum of squares 20 x 5M: serial, thread pool, process pool (aioshell); serial,
    ThreadPoolExecutor(5), multiprocessing.Pool(cpus) (CPython); serial, worker_threads (Node).
(b) 10,000 tiny jobs (x * 2): submit + wait on a thread pool and a process pool, and a chunked
    process map (aioshell); ThreadPoolExecutor, ProcessPoolExecutor, Pool.map chunksize=1 and
    default chunks (CPython).
Every measurement runs in a fresh process; runtimes are interleaved and the median of the runs
is reported, with ratios. Speed-ups need idle CPUs: the load average is printed first, run it
when the machine is quiet (other builds and tests skew everything on 2 cores).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
AIOSHELL = os.environ.get("AIOSHELL", os.path.join(ROOT, "build", "aioshell"))
PY = "/usr/bin/python3"
NODE = shutil.which("node")


def run(argv, timeout=300):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        return None
    figures = {}
    for word in out.stdout.split():
        if "=" in word:
            k, v = word.split("=", 1)
            figures[k] = float(v)
    return figures


def measure(cases, runs, key):
    """cases: list of (label, argv). Interleaved runs; returns {label: median of key}."""
    samples = {label: [] for label, _ in cases}
    for _ in range(runs):
        for label, argv in cases:
            f = run(argv)
            if f and key in f:
                samples[label].append(f[key])
    return {label: statistics.median(v) for label, v in samples.items() if v}


def table(title, rows, unit, base_label=None):
    print("\n### " + title + "\n")
    print("| runtime / variant | %s | ratio |" % unit)
    print("|---|---:|---:|")
    base = rows.get(base_label)
    for label, v in rows.items():
        ratio = ("%.2fx" % (v / base)) if base else ""
        print("| %s | %.3f | %s |" % (label, v, ratio))


def parse_args():
    """The command line: --help prints usage, an unknown flag exits 2 (argparse's rules)."""
    ap = argparse.ArgumentParser(description="aioshell thread and process pools against CPython and Node")
    ap.add_argument("--runs", type=int, help="runs per figure (median; default 3, 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="one run per figure")
    ap.add_argument("--only", default="ab", help="cases to run: a, b or ab (default ab)")
    args = ap.parse_args()
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    return args


def main():
    args = parse_args()
    runs, only = args.runs, args.only
    if not os.path.exists(AIOSHELL):
        sys.exit("no aioshell at %s (set AIOSHELL)" % AIOSHELL)
    with open("/proc/loadavg") as f:
        print("load average before: " + f.read().split()[0] + " (speed-ups need idle CPUs)")
    print("CPUs: %d, runs per figure: %d (medians)" % (os.cpu_count(), runs))
    lua = [AIOSHELL, os.path.join(HERE, "aio_workers.lua")]
    py = [PY, os.path.join(HERE, "peers", "py_workers.py")]
    node = [NODE, os.path.join(HERE, "peers", "node_workers.js")] if NODE else None

    if "a" in only:
        cases = [("aioshell serial", lua + ["sumsq_serial"]),
                 ("aioshell thread pool", lua + ["sumsq_threads"]),
                 ("aioshell process pool", lua + ["sumsq_procs"]),
                 ("CPython serial", py + ["sumsq_serial"]),
                 ("CPython ThreadPoolExecutor(5)", py + ["sumsq_threads"]),
                 ("CPython multiprocessing.Pool", py + ["sumsq_procs"])]
        if node:
            cases += [("Node serial (doubles)", node + ["sumsq_serial"]),
                      ("Node worker_threads", node + ["sumsq_workers"])]
        rows = measure(cases, runs, "seconds")
        table("(a) sum of squares, 20 x 5M (seconds; ratio to aioshell serial)", rows, "s",
              "aioshell serial")
        s = rows.get("aioshell serial")
        if s:
            for k in ("aioshell thread pool", "aioshell process pool"):
                if k in rows:
                    print("- %s speed-up over aioshell serial: %.2fx (target >= 1.9x on 2 idle cores)"
                          % (k, s / rows[k]))
            if "CPython serial" in rows:
                print("- aioshell serial is %.1fx faster than CPython serial"
                      % (rows["CPython serial"] / s))
            if "CPython multiprocessing.Pool" in rows and "aioshell thread pool" in rows:
                print("- aioshell thread pool vs CPython multiprocessing.Pool: %.1fx faster"
                      % (rows["CPython multiprocessing.Pool"] / rows["aioshell thread pool"]))
    if "b" in only:
        cases = [("aioshell thread pool submit", lua + ["tiny_threads", "10000"]),
                 ("aioshell process pool submit", lua + ["tiny_procs", "10000"]),
                 ("aioshell process pool map (chunked)", lua + ["tiny_procs_map", "10000"]),
                 ("CPython ThreadPoolExecutor submit", py + ["tiny_threads", "10000"]),
                 ("CPython ProcessPoolExecutor submit", py + ["tiny_procs", "10000"]),
                 ("CPython Pool.map chunksize=1", py + ["tiny_pool_map1", "10000"]),
                 ("CPython Pool.map default chunks", py + ["tiny_pool_map", "10000"])]
        rows = measure(cases, runs, "us_per_job")
        table("(b) 10,000 tiny jobs (microseconds per job)", rows, "us/job")
        pairs = [("aioshell thread pool submit", "CPython ThreadPoolExecutor submit", 4),
                 ("aioshell process pool submit", "CPython ProcessPoolExecutor submit", 30),
                 ("aioshell process pool map (chunked)", "CPython Pool.map default chunks", 1)]
        for ours, theirs, target in pairs:
            if ours in rows and theirs in rows:
                r = rows[theirs] / rows[ours]
                cmp = ("%.1fx faster" % r) if r >= 1 else ("%.1fx slower" % (1 / r))
                print("- %s: %.2f us vs %.2f us (%s than %s; target <= %g us)"
                      % (ours, rows[ours], rows[theirs], cmp, theirs, target))


if __name__ == "__main__":
    main()
