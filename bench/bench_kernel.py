"""Benchmark of the golden kernel: page faults handled per second, and a memory-pressure run.

Prints figures only (tests never assert on time).  Run: python bench/bench_kernel.py [--seed N]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

from model.mm import fork, mmap
from model.mm.kernel import Kernel
from model.user.workload import run_workload
from model.x86.pte import Access


def faults_per_second(kind: str, pages: int = 20000) -> float:
    """Demand-zero (anon write), zero-page (anon read) or COW faults, one per page."""
    k = Kernel(256 << 20)
    t = fork.spawn(k, "bench")
    addr = mmap.do_mmap(k, t, 0, pages << 12, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if kind == "cow":
        for i in range(pages):
            k.access(t, addr + (i << 12), Access.WRITE)
        t = fork.do_fork(k, t, "child")
    before = k.vmstat["pgfault"]
    access = Access.READ if kind == "zero-page read" else Access.WRITE
    start = time.perf_counter()
    for i in range(pages):
        k.access(t, addr + (i << 12), access)
    elapsed = time.perf_counter() - start
    return (k.vmstat["pgfault"] - before) / elapsed


def pressure(seed: int) -> None:
    """Timed without tracing; run again under tracemalloc for the peak Python heap."""
    start = time.perf_counter()
    k, _ = run_workload("swap-pressure", seed=seed)
    elapsed = time.perf_counter() - start
    tracemalloc.start()
    run_workload("swap-pressure", seed=seed)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"swap-pressure workload (64M RAM, 64M swap, seed {seed}): {elapsed:.2f} s, "
          f"{k.vmstat['pgfault']} faults, {k.vmstat['pswpout']} swapped out, {k.vmstat['pswpin']} swapped in, "
          f"{sum(k.flushes.values())} shootdowns")
    print(f"  peak Python heap (tracemalloc) {peak / 2**20:.1f} MiB, process max RSS {maxrss_kb / 1024:.1f} MiB, "
          f"simulated frames with host storage {k.mem.touched_frames}")


# Run in a fresh interpreter (tests/test_kernel_bounds.py runs it too): touch argv[1] MiB on a 64 GiB machine,
# print max RSS (kB) before and after, the seconds it took and the pages in use.
TOUCH_PROBE = """
import resource, sys, time
from model.mm import fork, mmap
from model.mm.kernel import Kernel
from model.x86.pte import Access
k = Kernel(64 << 30)
t = fork.spawn(k, "toucher")
n = int(sys.argv[1]) << 20
base = mmap.do_mmap(k, t, 0, n, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
for va in range(base, base + n, 4096):
    k.access(t, va, Access.WRITE)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - start,
      k.buddy.nr_pages - k.buddy.nr_free_pages)
"""


def touched_64g(mib: int) -> None:
    """Host memory of a 64 GiB machine with ``mib`` MiB touched (a fresh process, so its peak is this run's)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", TOUCH_PROBE, str(mib)], capture_output=True, text=True, check=True)
    before_kb, after_kb, elapsed, _ = out.stdout.split()
    print(f"64 GiB machine, {mib} MiB touched ({mib * 256} faults, {float(elapsed):.1f} s): host max RSS "
          f"{int(after_kb) / 1024:.0f} MiB ({int(before_kb) / 1024:.0f} MiB after boot)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--touch", type=int, default=1024, metavar="MIB",
                        help="MiB to touch on the 64 GiB machine (default 1024)")
    args = parser.parse_args()
    print(f"seed {args.seed}")
    pressure(args.seed)  # first, so the process max RSS is this run's
    touched_64g(args.touch)
    for kind in ("demand-zero write", "zero-page read", "cow"):
        print(f"{kind:>18}: {faults_per_second(kind):10.0f} page faults/s")


if __name__ == "__main__":
    main()
