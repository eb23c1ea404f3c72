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

import gzip
from pathlib import Path

from benchlib import synthetic_args, timed

from model.config import MMUConfig
from replay.lackey import SHIPPED_TRACE, Trace, parse_lackey
from replay.synthetic import synthetic_trace
from replay.trace_replay import fold_mask, replay

ROOT = Path(__file__).resolve().parents[1]
REAL_TRACE = SHIPPED_TRACE

def main() -> None:
    args = synthetic_args(__doc__.splitlines()[0])
    cfg = MMUConfig()

    (trace,), took = timed(lambda: (synthetic_trace(args.accesses, args.seed),))
    print(f"synthetic trace      : {len(trace):,} accesses, generated in {took.cpu:.2f} s")
    (keep,), took = timed(lambda: (fold_mask(trace.vaddr, trace.access, cfg.itlb.sets, cfg.dtlb.sets),))
    print(f"folding (numpy)      : {took.cpu:.2f} s, {int(keep.sum()):,} accesses left ({100 * keep.mean():.1f}%)")
    (r,), took = timed(lambda: (replay(trace, cfg),))
    print(f"replay, folded       : {took.rate(len(trace))} accesses/s ({took}; mapping {r.pages:,} pages, "
          f"folding and the model; default config)")
    print(f"  result             : {r.to_json()}")

    part = Trace.from_arrays(trace.vaddr[:300_000], trace.access[:300_000])
    _, took = timed(lambda: replay(part, cfg, fold=False))
    print(f"replay, not folded   : {took.rate(len(part))} accesses/s ({took}; first {len(part):,} accesses)")

    text = gzip.decompress(REAL_TRACE.read_bytes())
    lines = text.count(b"\n")
    took = min((timed(lambda: parse_lackey(text))[1] for _ in range(3)), key=lambda t: t.cpu)
    print(f"parse real trace     : {took.rate(lines)} lines/s ({took}; {REAL_TRACE.name}, {lines:,} lines, "
          f"{len(text) / 1e6:.1f} MB)")
    big = text * 10
    _, took = timed(lambda: parse_lackey(big))
    print(f"parse 10 copies      : {took.rate(10 * lines)} lines/s ({took}; {10 * lines:,} lines, "
          f"{len(big) / 1e6:.0f} MB in memory)")


if __name__ == "__main__":
    main()
