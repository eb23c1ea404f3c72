"""`mmu trace`: replay a real program's memory trace (valgrind lackey) through the reference MMU.

Prints how many TLB misses, page walks and DRAM reads the trace costs with the
configured TLBs and page-walk cache; ``--json`` prints one JSON object for scripts.
The address space and the folding of repeat hits are described in
``sim/trace_replay.py`` and docs/traces.md.
"""

from __future__ import annotations

import argparse
import json

from model.pte import Access

from .cmd_config import add_config_args, config_from_args
from .lackey import read_lackey
from .trace_replay import replay


def register(sub) -> None:
    p = sub.add_parser("trace", help="replay a valgrind lackey trace through the reference MMU",
                       description="Replay a memory trace made with `valgrind --tool=lackey --trace-mem=yes` "
                                   "(plain or gzip) through the reference MMU; every page the trace touches "
                                   "is mapped as a 4 KiB user page. See docs/traces.md.")
    p.add_argument("file", metavar="FILE", help="lackey trace file (.gz is read transparently)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: accesses, itlb_misses, dtlb_misses, walks, dram_reads, faults, "
                        "cycles (null: not simulated)")
    add_config_args(p)
    p.set_defaults(func=run)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    trace = read_lackey(args.file)
    r = replay(trace, cfg)
    if args.json:
        print(json.dumps(r.to_json()))
        return 0
    fetches = int((trace.access == Access.FETCH).sum())
    data = len(trace) - fetches
    c = r.counters
    rows = [
        ("trace", f"{trace.name}: {trace.records} records, {len(trace)} page accesses, {r.pages} pages"),
        ("ITLB", f"{cfg.itlb.entries} entries, {cfg.itlb.ways} ways, {cfg.itlb.policy.value}: "
                 f"{r.itlb_misses} misses ({_pct(r.itlb_misses, fetches)} of {fetches} fetches)"),
        ("DTLB", f"{cfg.dtlb.entries} entries, {cfg.dtlb.ways} ways, {cfg.dtlb.policy.value}: "
                 f"{r.dtlb_misses} misses ({_pct(r.dtlb_misses, data)} of {data} reads and writes)"),
        ("walks", f"{r.walks} ({c['pwc_hits']} started below PML4 from the {cfg.pwc_entries}-entry page-walk cache)"),
        ("DRAM", f"{r.dram_reads} reads, {c['mem_writes']} writes (A/D updates)"),
        ("faults", str(r.faults)),
        ("cycles", "not simulated (reference model only)" if r.cycles is None else str(r.cycles)),
        ("replayed", f"{r.replayed} accesses reached the model, {len(trace) - r.replayed} folded as repeat hits"),
    ]
    for name, text in rows:
        print(f"{name:<9} {text}")
    return 0
