"""A synthetic page-access trace with the locality of a real program, for benchmarks and sweeps of any length.

Instruction fetches run through a few hundred code pages with a skewed (Zipf) popularity; data accesses are
stack accesses (a few hot pages), sequential array scans and pointer chasing over a large heap, about one data
access per three fetches, 30% of them writes.  The same ``seed`` always gives the same trace.
"""

from __future__ import annotations

import numpy as np

from model.x86.pte import Access
from replay.lackey import Trace

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
