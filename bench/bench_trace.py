"""Trace figures: reference-MMU replay rate on a large synthetic trace, and lackey parse rate.

Usage: python bench/bench_trace.py [--accesses N] [--seed SEED]
The synthetic trace (default 12 million page accesses) is generated in memory
with the locality of a real program: instruction fetches in runs through a few
hundred code pages with a skewed popularity, and data accesses that are stack
accesses (a few hot pages), sequential array scans, and pointer chasing over
a large heap, about one data access per three fetches, 30% of them writes.
Rates are per CPU second.  Prints figures only; nothing here asserts about time.
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.config import MMUConfig
from model.pte import Access
from sim.lackey import Trace, parse_lackey
from sim.trace_replay import fold_mask, replay

ROOT = Path(__file__).resolve().parents[1]
REAL_TRACE = ROOT / "traces" / "listwalk.lackey.gz"

CODE_BASE, CODE_PAGES = 0x400000, 256
STACK_TOP = 0x7FFD_0000_0000
HEAP_BASE, HEAP_PAGES = 0x5555_0000_0000, 20_000  # 80 MiB of pointer-chasing targets
ARRAY_BASE, ARRAY_BYTES = 0x7F00_0000_0000, 64 << 20


def _runs(rng, n: int, mean: float) -> np.ndarray:
    """Run lengths (geometric, mean ``mean``) that add up to exactly ``n``."""
    lengths = rng.geometric(1 / mean, int(n / mean * 1.2) + 16)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), n) + 1]
    lengths[-1] -= lengths.sum() - n
    return lengths


def _within_runs(lengths: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... restarting at each run."""
    starts = np.cumsum(lengths) - lengths
    return np.arange(lengths.sum()) - np.repeat(starts, lengths)


def synthetic_trace(n: int, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    fetch = rng.random(n) < 0.75
    nf, nd = int(fetch.sum()), n - int(fetch.sum())

    # Fetches: runs of sequential 4-byte instructions (mean 24) in Zipf-popular code pages.
    lengths = _runs(rng, nf, 24)
    page = np.minimum(rng.zipf(1.6, len(lengths)), CODE_PAGES) - 1
    start = rng.integers(0, 4096, len(lengths))
    offset = (np.repeat(start, lengths) + 4 * _within_runs(lengths)) % 4096
    fetches = CODE_BASE + (np.repeat(page, lengths) << 12) + offset

    # Data: runs (mean 6) of stack, array-scan or heap accesses.
    lengths = _runs(rng, nd, 6)
    kind = rng.choice(3, len(lengths), p=[0.45, 0.35, 0.20])
    k = np.repeat(kind, lengths)
    step = _within_runs(lengths)
    stack = STACK_TOP - 4096 * np.minimum(rng.zipf(2.0, len(lengths)), 8) + 8 * (rng.integers(0, 500, len(lengths)))
    stack = np.repeat(stack, lengths) + 8 * step % 4096
    scan_pos = np.cumsum(np.where(k == 1, 8, 0)) % ARRAY_BYTES  # one array scanned from run to run
    heap = HEAP_BASE + (rng.integers(0, HEAP_PAGES, len(lengths)) << 12) + 16 * rng.integers(0, 250, len(lengths))
    heap = np.repeat(heap, lengths) + 8 * (step % 2)
    data = np.select([k == 0, k == 1], [stack, ARRAY_BASE + scan_pos], heap)

    vaddr = np.empty(n, np.uint64)
    vaddr[fetch], vaddr[~fetch] = fetches.astype(np.uint64), data.astype(np.uint64)
    access = np.full(n, Access.FETCH, np.uint8)
    access[~fetch] = np.where(rng.random(nd) < 0.3, Access.WRITE, Access.READ)
    return Trace.from_arrays(vaddr, access, f"synthetic seed={seed}")


def synthetic_args(description: str) -> argparse.Namespace:
    """--accesses and --seed of the synthetic-trace benches; prints the seed so a run replays."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--accesses", type=int, default=12_000_000, help="synthetic trace length (default 12 million)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("MMU_SEED", "1")))
    args = ap.parse_args()
    print(f"seed {args.seed} (replay with --seed {args.seed} or MMU_SEED={args.seed})")
    return args


def main() -> None:
    args = synthetic_args(__doc__.splitlines()[0])
    cfg = MMUConfig()

    (trace,), took = _timed(lambda: (synthetic_trace(args.accesses, args.seed),))
    print(f"synthetic trace      : {len(trace):,} accesses, generated in {took.cpu:.2f} s")
    (keep,), took = _timed(lambda: (fold_mask(trace.vaddr, trace.access, cfg.itlb.sets, cfg.dtlb.sets),))
    print(f"folding (numpy)      : {took.cpu:.2f} s, {int(keep.sum()):,} accesses left ({100 * keep.mean():.1f}%)")
    (r,), took = _timed(lambda: (replay(trace, cfg),))
    print(f"replay, folded       : {took.rate(len(trace))} accesses/s ({took}; mapping {r.pages:,} pages, "
          f"folding and the model; default config)")
    print(f"  result             : {r.to_json()}")

    part = Trace.from_arrays(trace.vaddr[:300_000], trace.access[:300_000])
    _, took = _timed(lambda: replay(part, cfg, fold=False))
    print(f"replay, not folded   : {took.rate(len(part))} accesses/s ({took}; first {len(part):,} accesses)")

    text = gzip.decompress(REAL_TRACE.read_bytes())
    lines = text.count(b"\n")
    took = min((_timed(lambda: parse_lackey(text))[1] for _ in range(3)), key=lambda t: t.cpu)
    print(f"parse real trace     : {took.rate(lines)} lines/s ({took}; {REAL_TRACE.name}, {lines:,} lines, "
          f"{len(text) / 1e6:.1f} MB)")
    big = text * 10
    _, took = _timed(lambda: parse_lackey(big))
    print(f"parse 10 copies      : {took.rate(10 * lines)} lines/s ({took}; {10 * lines:,} lines, "
          f"{len(big) / 1e6:.0f} MB in memory)")


@dataclass
class Took:
    """CPU and wall-clock seconds; rates use CPU time, which other jobs on the machine do not inflate."""

    cpu: float
    wall: float

    def rate(self, n: int) -> str:
        return f"{n / self.cpu:12,.0f}"

    def __str__(self) -> str:
        return f"{self.cpu:.2f} s CPU, {self.wall:.2f} s wall"


def _timed(fn) -> tuple[object, Took]:
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, Took(time.process_time() - c, time.perf_counter() - w)


if __name__ == "__main__":
    main()
