"""Trace figures on a real program: `mmu trace` against valgrind's cachegrind, per policy, with peak memory.

Usage: python bench/bench_trace.py [--lines N] [--dir DIR]
Makes the trace in DIR (default: a temporary directory; never in git): `sort -n` of N (default 14,000)
shuffled numbers under `valgrind --tool=lackey --trace-mem=yes`, about 62 million page accesses and 890 MB
of text (docs/traces.md).  Then, each in its own process, timed by wall clock and CPU with its peak RSS:
cachegrind on the same `sort` run (I1 16 entries fully associative, D1 32 entries 4 ways, 4096-byte lines:
the default TLBs, in LRU) and `mmu trace --quiet --json` on the trace for each policy.  Ratios are
cachegrind time / mmu time, both including their own input work (cachegrind runs the program, mmu reads
the trace).  The shipped trace (1 M accesses) gives the peak RSS of a short trace for comparison.
Prints figures only; nothing here asserts about time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from replay.lackey import SHIPPED_TRACE

ROOT = Path(__file__).resolve().parents[1]

MMU = [sys.executable, "-m", "cli.main", "trace"]
POLICIES = ("lru", "plru", "fifo", "random")


def measure(argv: list[str], **kw) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS in MB of one process."""
    start = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=14_000)
    ap.add_argument("--dir", type=Path)
    args = ap.parse_args()
    for tool in ("valgrind", "sort"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool} (Debian: apt-get install valgrind coreutils)")
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_trace-"))
    work.mkdir(parents=True, exist_ok=True)
    numbers = work / "numbers.txt"
    values = list(range(1, args.lines + 1))
    random.Random(1).shuffle(values)
    numbers.write_text("".join(f"{v}\n" for v in values))
    program = ["sort", "-n", str(numbers), "-o", "/dev/null"]
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    trace = work / "sort.lackey"
    wall, _, _ = measure(["valgrind", "--tool=lackey", "--trace-mem=yes", f"--log-file={trace}", *program], env=env)
    print(f"trace      : {' '.join(program)} under lackey in {wall:.1f} s: {trace.stat().st_size / 1e6:,.0f} MB")

    cg = ["valgrind", "--tool=cachegrind", "--cache-sim=yes", "--cachegrind-out-file=/dev/null",
          "--I1=65536,16,4096", "--D1=131072,4,4096", "--LL=67108864,16,4096", *program]
    cg_wall, cg_cpu, cg_rss = measure(cg, env=env)
    print(f"cachegrind : {cg_wall:.2f} s wall, {cg_cpu:.2f} s CPU, peak RSS {cg_rss} MB")

    _, _, small_rss = measure(MMU + [str(SHIPPED_TRACE), "--quiet", "--json"], cwd=ROOT)
    accesses = None
    for policy in POLICIES:
        argv = MMU + [str(trace), "--quiet", "--json", "--policy", policy]
        wall, cpu, rss = measure(argv, cwd=ROOT)
        if accesses is None:
            out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True).stdout
            accesses = json.loads(out)["accesses"]
        print(f"mmu {policy:<6} : {wall:.2f} s wall, {cpu:.2f} s CPU: {accesses / cpu / 1e6:.1f} M accesses per CPU s; "
              f"cachegrind / mmu: {cg_wall / wall:.2f} (wall), {cg_cpu / cpu:.2f} (CPU); peak RSS {rss} MB")
    print(f"peak RSS on the shipped 1 M-access trace: {small_rss} MB; on the {accesses / 1e6:.0f} M-access one: "
          "above (bounded by pages touched, not by length)")
    if args.dir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
