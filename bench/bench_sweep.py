"""Sweep figures: the LRU stack-distance pass against replaying each DTLB size one by one.

Usage: python bench/bench_sweep.py [--accesses N] [--seed SEED]
On the synthetic trace of replay/synthetic.py (default 12 million page accesses), one
stack-distance pass gives the DTLB misses of a fully associative LRU DTLB of
every size; the folded replay (replay/trace_replay.py) needs one run per size.
Both give the same counts (printed).  Also: a sweep row (the curve's distances
plus the compiled replay of the row), and the textbook Fenwick-tree pass in pure
Python on a prefix, for scale.  Rates are per CPU second; prints figures only.
"""

from __future__ import annotations

import numpy as np
from benchlib import synthetic_args, timed

from model.config import MMUConfig, Policy, TLBConfig
from model.x86.pte import PAGE_SHIFT
from replay.stack_distance import COLD
from replay.sweep import LRUStack, Point, sweep
from replay.synthetic import synthetic_trace
from replay.trace_replay import replay

SIZES = [1, 2, 4, 8, 16]  # fully associative LRU sizes the hardware (and so TLBConfig) allows
FENWICK_PREFIX = 300_000


def fenwick_distances(keys: list[int]) -> list[int]:
    """Stack distances with a Fenwick tree over last-use times, one Python iteration per reference
    (-1 for a first use): the O(n log n) algorithm that replay/stack_distance.py does in numpy passes."""
    n = len(keys)
    tree = [0] * (n + 1)
    last: dict[int, int] = {}
    out = []

    def add(i: int, delta: int) -> None:
        i += 1
        while i <= n:
            tree[i] += delta
            i += i & -i

    def prefix(i: int) -> int:  # marks at times < i
        s = 0
        while i > 0:
            s += tree[i]
            i -= i & -i
        return s

    live = 0
    for t, key in enumerate(keys):
        p = last.get(key)
        if p is None:
            out.append(-1)
            live += 1
        else:
            out.append(live - prefix(p + 1))  # last uses after p: the distinct keys since
            add(p, -1)
        add(t, 1)
        last[key] = t
    return out


def main() -> None:
    args = synthetic_args(__doc__.splitlines()[0])
    trace = synthetic_trace(args.accesses, args.seed)
    cfg = MMUConfig()

    lru, sd = timed(lambda: LRUStack(trace))
    lookups = len(lru.index)
    print(f"stack-distance pass   : {sd.rate(len(trace))} trace accesses/s ({sd}; {len(trace):,} accesses, "
          f"{lookups:,} DTLB lookups: {lookups / sd.cpu:,.0f}/s)")
    misses = lru.misses(SIZES)
    _, took = timed(lambda: lru.misses(np.arange(1, 1 << 15)))
    print(f"  misses of every size 1..32767 from the distances: {took}")

    replay_cpu = 0.0
    for n, m in zip(SIZES, misses.tolist()):
        c = cfg.replace(dtlb=TLBConfig(n, n, Policy.LRU))
        r, took = timed(lambda: replay(trace, c))
        replay_cpu += took.cpu
        print(f"replay, {n:>2} entries     : {took.rate(len(trace))} accesses/s ({took}); "
              f"DTLB misses {r.dtlb_misses:,}, stack distances {m:,}: {'equal' if r.dtlb_misses == m else 'DIFFER'}")
    print(f"{len(SIZES)} replays             : {replay_cpu:.2f} s CPU; the stack-distance pass, every size: "
          f"{sd.cpu:.2f} s CPU ({replay_cpu / sd.cpu:.0f}x)")

    (row,), took = timed(lambda: sweep(trace, cfg, [Point(16, 16, Policy.LRU, cfg.pwc_entries)]).rows)
    print(f"sweep row, 16 entries : {took.rate(len(trace))} accesses/s ({took}; the curve's distances and the "
          f"compiled replay of the row, {row.walks:,} walks)")

    index = lru.index[:FENWICK_PREFIX]
    prefix = type(trace).from_arrays(trace.vaddr[index], trace.access[index])
    pages = (prefix.vaddr >> np.uint64(PAGE_SHIFT)).tolist()
    fenwick, took = timed(lambda: fenwick_distances(pages))
    numpy_lru, took_np = timed(lambda: LRUStack(prefix))
    same = np.array_equal(np.where(numpy_lru.distance == COLD, -1, numpy_lru.distance), fenwick)
    print(f"Fenwick tree, Python  : {took.rate(len(pages))} DTLB lookups/s ({took}; first {len(pages):,}); "
          f"numpy passes on the same: {took_np.rate(len(pages))}/s; distances {'equal' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
