"""`mmu sweep`: DTLB size, associativity, policy and page-walk-cache sweeps over a lackey trace.

Prints one row per configuration (ITLB and DTLB hit rates, walks, DRAM reads per
walk, cycles per translation) and writes the plots.  How the figures are made
(stack distances for fully associative LRU, the folded replay otherwise) and the
timing model are in ``replay/sweep.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.arguments import comma_list
from cli.cmd_config import add_base_args, config_from_args
from model.config import ConfigError, Policy
from model.errors import UserError

RULES = {
    "entries": "TLB entries are powers of two (1, 2, 4, ...)",
    "ways": "ways are powers of two, or 'full' (fully associative)",
    "pwc": "page-walk-cache sizes are 0 (off) or powers of two",
}


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _int(option: str, s: str, ok) -> int:
    try:
        n = int(s)
    except ValueError:
        n = None
    if n is None or not ok(n):
        raise UserError(f"--{option} {s}: {RULES[option]}")
    return n


def parse_entries(text: str) -> list[int]:
    return [_int("entries", s, _pow2) for s in comma_list("entries", text)]


def parse_ways(text: str) -> list[int | None]:
    """Ways per list item; None is 'full'."""
    return [None if s.lower() == "full" else _int("ways", s, _pow2) for s in comma_list("ways", text)]


def parse_policies(text: str) -> list[Policy]:
    policies = []
    for s in comma_list("policy", text):
        try:
            policies.append(Policy.parse(s))
        except ConfigError:
            raise UserError(f"--policy {s}: policies are {', '.join(p.value for p in Policy)}") from None
    return policies


def parse_pwcs(text: str) -> list[int]:
    return [_int("pwc", s, lambda n: n == 0 or _pow2(n)) for s in comma_list("pwc", text)]


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="DTLB and page-walk-cache sweep over a lackey trace: table and plots",
        description="Replay a valgrind lackey trace through every combination of DTLB entries, ways and "
                    "policy and page-walk-cache size; print the ITLB and DTLB hit rates, DRAM reads per walk "
                    "and cycles per translation, and write plots. The ITLB stays at the base configuration. "
                    "Fully associative LRU comes from LRU stack distances (every size in one pass); the rest "
                    "from the exact folded replay of `mmu trace`. Cycles: a hit costs 1; a miss a fixed "
                    "overhead + (L + 1) x DRAM reads + A/D writes, with L the fixed DRAM latency (the Amaranth "
                    "MMU's timing, docs/hardware.md; the table's header prints the formula).")
    p.add_argument("file", metavar="TRACE", help="lackey trace file (.gz is read transparently)")
    p.add_argument("--entries", default="8,16,32,64,128", metavar="LIST",
                   help="DTLB entries, powers of two (default: %(default)s)")
    p.add_argument("--ways", default="1,2,4,full", metavar="LIST",
                   help="DTLB ways, powers of two or 'full' (default: %(default)s)")
    p.add_argument("--policy", dest="policies", default="lru,plru,fifo,random", metavar="LIST",
                   help="DTLB replacement policies (default: %(default)s)")
    p.add_argument("--pwc", dest="pwcs", default="0,8", metavar="LIST",
                   help="page-walk-cache entries, 0 = off (default: %(default)s)")
    p.add_argument("--out", metavar="DIR", help="directory for the plots (default: sweep-<trace name>)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is shown only when stderr is a terminal)")
    g = p.add_argument_group("base configuration (ITLB, DRAM; defaults: model/config.py)")
    add_base_args(g)
    for f in ("entries", "ways"):
        g.add_argument(f"--itlb-{f}", type=int, metavar="N")
    g.add_argument("--itlb-policy", choices=[p.value for p in Policy])
    g.add_argument("--dram-latency", type=int, metavar="CYCLES")
    g.add_argument("--maxphyaddr", type=int, metavar="M")
    # what config_from_args reads but the sweep varies itself
    p.set_defaults(func=run, policy=None, pwc_entries=None, itlb_superpage_entries=None, dtlb_entries=None,
                   dtlb_ways=None, dtlb_superpage_entries=None, dtlb_policy=None)


def run(args: argparse.Namespace) -> int:
    from replay.lackey import read_lackey  # numpy and matplotlib: imported when a sweep runs
    from replay.sweep import CycleModel, format_table, make_points, plot, sweep, to_json

    entries, ways = parse_entries(args.entries), parse_ways(args.ways)
    policies, pwcs = parse_policies(args.policies), parse_pwcs(args.pwcs)
    base = config_from_args(args)
    CycleModel.for_config(base)  # refuse a DRAM it cannot time before the long part
    points = make_points(entries, ways, policies, pwcs, base)
    trace = read_lackey(args.file)
    out = Path(args.out) if args.out else Path(f"sweep-{Path(args.file).name.split('.')[0]}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the directory: {e.strerror or e}") from None
    result = sweep(trace, base, points, progress=not args.quiet)
    plots = plot(result, ways, out)
    if args.json:
        print(json.dumps(to_json(result, plots)))
    else:
        print(format_table(result))
        print("\nplots   " + "  ".join(str(p) for p in plots))
    return 0
