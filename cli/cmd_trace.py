"""`mmu trace`: replay a real program's memory trace (valgrind lackey) through the reference MMU,
or with ``--hw`` through the Verilog MMU on Icarus.

Prints how many TLB misses, page walks and DRAM reads the trace costs with the
configured TLBs and page-walk cache; ``--json`` prints one JSON object for scripts.
``--limit N`` takes the first N page accesses.  The model path streams the file
through the compiled replay (``replay/compiled_mmu.py``: the reference MMU's
behaviour step for step, any TLB geometry, memory bounded by the pages touched);
the address space is described in ``replay/trace_replay.py`` and docs/traces.md.
The hardware run (every access sent, pipelined, the scoreboard on, ``cycles``
measured, the hardware's limits on the geometry) is in ``sim/trace_cosim.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from cli.cmd_config import add_config_args, config_from_args
from model.config import MMUConfig, hardware_name
from model.errors import UserError
from model.x86.pte import Access


def register(sub) -> None:
    p = sub.add_parser("trace", help="replay a valgrind lackey trace through the reference MMU",
                       description="Replay a memory trace made with `valgrind --tool=lackey --trace-mem=yes` "
                                   "(plain or gzip) through the reference MMU; every page the trace touches "
                                   "is mapped as a 4 KiB user page. See docs/traces.md.")
    p.add_argument("file", metavar="FILE", help="lackey trace file (.gz is read transparently)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: accesses, itlb_misses, dtlb_misses, walks, dram_reads, faults, "
                        "cycles (null: not simulated)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is shown only when stderr is a terminal)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N page accesses of the trace")
    p.add_argument("--hw", action="store_true",
                   help="through the Verilog MMU on Icarus, every access sent (pipelined) and checked against the "
                        "reference MMU; adds cycles and the DTLB read/write split (thousands of accesses a second: "
                        "use --limit for a long trace)")
    p.add_argument("--seed", metavar="N", help="with --hw: the testbench's seed (default: $SEED, else a fresh one; "
                                               "it only matters with DRAM jitter or ready drops in --config)")
    add_config_args(p)
    p.set_defaults(func=run)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


def _describe(name: str, records: int, accesses: int, total: int, pages: int) -> str:
    if accesses < total:
        return f"{name}: first {accesses} of {total} page accesses ({records} records in all), {pages} pages"
    return f"{name}: {records} records, {accesses} page accesses, {pages} pages"


def run(args: argparse.Namespace) -> int:
    from replay.compiled_mmu import (  # numba and numpy; cocotb only with --hw
        DIRTY_REWALKS,
        DTLB_LOOKUPS,
        DTLB_RECORD_MISSES,
        ITLB_LOOKUPS,
        ITLB_RECORD_MISSES,
        replay_file,
    )
    from replay.lackey import read_lackey
    from sim.trace_cosim import trace_prefix

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: must be a positive number of page accesses")
    if args.seed is not None and not args.hw:
        raise UserError("--seed: only with --hw (the reference replay has no randomness)")
    if args.hw:  # the hardware's limits apply: the configuration must be buildable
        cfg = config_from_args(args)
        whole = read_lackey(args.file)
        return run_hw(args, cfg, trace_prefix(whole, args.limit), whole)
    cfg = config_from_args(args, model_only=True)
    done = replay_file(args.file, cfg, limit=args.limit, progress=not args.quiet)
    m = done.mmu
    r = m.result()
    if args.json:
        print(json.dumps(r.to_json()))
        return 0
    fetches, data = m.count(ITLB_LOOKUPS), m.count(DTLB_LOOKUPS)
    c = r.counters
    rows = [
        ("trace", _describe(args.file, done.records, r.accesses, done.accesses, r.pages)),
        ("ITLB", f"{cfg.itlb.entries} entries, {cfg.itlb.ways} ways, {cfg.itlb.policy.value}: "
                 f"{r.itlb_misses} misses ({_pct(r.itlb_misses, fetches)} of {fetches} fetches)"),
        ("DTLB", f"{cfg.dtlb.entries} entries, {cfg.dtlb.ways} ways, {cfg.dtlb.policy.value}: "
                 f"{r.dtlb_misses} misses ({_pct(r.dtlb_misses, data)} of {data} reads and writes), "
                 f"{m.count(DIRTY_REWALKS)} of them D-bit re-walks"),
        ("walks", f"{r.walks} ({c['pwc_hits']} started below PML4 from the {cfg.pwc_entries}-entry page-walk cache)"),
        ("DRAM", f"{r.dram_reads} reads, {c['mem_writes']} writes (A/D updates)"),
        ("faults", str(r.faults)),
        ("cycles", "not simulated (reference model only)" if r.cycles is None else str(r.cycles)),
        ("records", f"{m.count(ITLB_RECORD_MISSES)} instruction and {m.count(DTLB_RECORD_MISSES)} data records "
                    "missed (a cache of 4096-byte lines counts these: cachegrind's I1 and D1 misses)"),
    ]
    for name, text in rows:
        print(f"{name:<9} {text}")
    return 0


def _seed(args: argparse.Namespace) -> int:
    from sim import runner as R

    text = args.seed if args.seed is not None else os.environ.get("SEED", "").strip()
    if not text:
        return R.fresh_seed()
    try:
        return int(text, 0)
    except ValueError:
        raise UserError(f"--seed {text!r}: must be an integer (decimal or 0x...)") from None


def run_hw(args: argparse.Namespace, cfg, trace, whole) -> int:
    from sim.trace_cosim import HW_KEYS, RESULTS_DIR, run_on_hardware

    seed = _seed(args)
    argv = ["mmu", "trace", args.file, "--hw"] + (["--limit", str(args.limit)] if args.limit else [])
    if cfg != MMUConfig():  # the whole configuration in one file, so that the command replays it exactly
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        saved = RESULTS_DIR / f"config-{hardware_name(cfg)}.json"
        saved.write_text(json.dumps(cfg.to_dict(), indent=2))
        argv += ["--config", str(saved)]
    replay_cmd = " ".join(shlex.quote(a) for a in argv + ["--seed", str(seed)])
    print(f"seed {seed}: {len(trace)} page accesses through the Verilog MMU on Icarus (replay: {replay_cmd})",
          file=sys.stderr, flush=True)
    out = run_on_hardware(args.file, args.limit, cfg, seed, replay_cmd, progress=None if args.quiet else len(trace))
    if not out.passed:
        print(f"mmu trace --hw: FAILED\n{out.message}\n  simulator log: {out.log}", file=sys.stderr)
        return 1
    t = out.result["extra"]["trace"]
    res = t["result"]
    if args.json:
        print(json.dumps({k: res[k] for k in HW_KEYS}))
        return 0
    fetches = int((trace.access == Access.FETCH).sum())
    reads = int((trace.access == Access.READ).sum())
    writes = len(trace) - fetches - reads
    n = max(1, res["accesses"])
    rows = [
        ("trace", _describe(args.file, whole.records, len(trace), len(whole), t["pages"])),
        ("hardware", f"Verilog MMU on Icarus ({hardware_name(cfg)}), seed {seed}: {res['accesses']} responses "
                     f"checked against the reference MMU, zero mismatches"),
        ("ITLB", f"{cfg.itlb.entries} entries, {cfg.itlb.ways} ways, {cfg.itlb.policy.value}: "
                 f"{res['itlb_misses']} misses ({_pct(res['itlb_misses'], fetches)} of {fetches} fetches)"),
        ("DTLB", f"{cfg.dtlb.entries} entries, {cfg.dtlb.ways} ways, {cfg.dtlb.policy.value}: "
                 f"{res['dtlb_misses']} misses: {res['dtlb_read_misses']} on reads "
                 f"({_pct(res['dtlb_read_misses'], reads)} of {reads}), {res['dtlb_write_misses']} on writes "
                 f"({_pct(res['dtlb_write_misses'], writes)} of {writes})"),
        ("walks", f"{res['walks']} ({t['pwc_hits']} started below PML4 from the {cfg.pwc_entries}-entry page-walk "
                  f"cache), {t['walk_cycles']} cycles walking"),
        ("DRAM", f"{res['dram_reads']} reads, {t['dram_writes']} writes (A/D updates)"),
        ("faults", str(res["faults"])),
        ("cycles", f"{res['cycles']} from the first request to the last response, requests pipelined: "
                   f"{res['cycles'] / n:.3f} per translation"),
        ("reference", "every counter above equals the reference replay of the same accesses"),
    ]
    for name, text in rows:
        print(f"{name:<9} {text}")
    return 0
