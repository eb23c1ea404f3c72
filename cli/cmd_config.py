"""`mmu config`: print the MMU configuration that a set of options describes (``--list-presets``: the presets).

Also home of the option group every hardware-facing subcommand shares, so that
`mmu verilog`, `mmu trace`, `mmu explain` and `mmu sweep` spell configuration the
same way: a base (``--preset NAME`` from ``model.config.PRESETS``, or ``--config
FILE``, else the defaults), then the explicit options, which override it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.config import PRESET_DOCS, DRAMTiming, MMUConfig, Policy, TLBConfig, preset
from model.errors import UserError


def add_base_args(group) -> None:
    """The two ways to name a whole configuration; the options after them override it."""
    group.add_argument("--preset", metavar="NAME", help="a named configuration (`mmu config --list-presets`)")
    group.add_argument("--config", metavar="FILE", help="JSON file as printed by `mmu config`")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("MMU configuration (defaults: model/config.py; options override the base)")
    add_base_args(g)
    for tlb in ("itlb", "dtlb"):
        g.add_argument(f"--{tlb}-entries", type=int, metavar="N")
        g.add_argument(f"--{tlb}-ways", type=int, metavar="W")
        g.add_argument(f"--{tlb}-superpage-entries", type=int, metavar="N")
        g.add_argument(f"--{tlb}-policy", choices=[p.value for p in Policy])
    g.add_argument("--policy", choices=[p.value for p in Policy], help="replacement policy of both TLBs")
    g.add_argument("--pwc", type=int, metavar="N", dest="pwc_entries", help="page-walk cache entries (0: off)")
    g.add_argument("--maxphyaddr", type=int, metavar="M", help="physical address width")
    g.add_argument("--dram-latency", type=int, metavar="CYCLES")


def base_config(args: argparse.Namespace) -> MMUConfig:
    """The configuration ``--preset`` or ``--config`` names, else the defaults."""
    name = getattr(args, "preset", None)
    if name is not None and getattr(args, "config", None):
        raise UserError(f"--preset {name} and --config {args.config}: give one base configuration, not both")
    if name is not None:
        return preset(name)
    base = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            base = json.loads(path.read_text())
        except OSError as e:
            raise UserError(f"--config {path}: cannot read: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise UserError(f"--config {path}: not JSON (line {e.lineno}: {e.msg})") from None
        if not isinstance(base, dict):
            raise UserError(f"--config {path}: must hold one JSON object")
    return MMUConfig.from_dict(base)


def config_from_args(args: argparse.Namespace) -> MMUConfig:
    cfg = base_config(args)
    tlbs = {}
    for tlb in ("itlb", "dtlb"):
        t: TLBConfig = getattr(cfg, tlb)
        fields = {"entries": t.entries, "ways": t.ways, "superpage_entries": t.superpage_entries, "policy": t.policy}
        if args.policy:
            fields["policy"] = args.policy
        for f in fields:
            v = getattr(args, f"{tlb}_{f}", None)
            if v is not None:
                fields[f] = v
        tlbs[tlb] = TLBConfig(**fields)
    changes = dict(tlbs)
    if args.pwc_entries is not None:
        changes["pwc_entries"] = args.pwc_entries
    if args.maxphyaddr is not None:
        changes["maxphyaddr"] = args.maxphyaddr
    if args.dram_latency is not None:
        changes["dram"] = DRAMTiming(**{**cfg.to_dict()["dram"], "latency": args.dram_latency})
    return cfg.replace(**changes)


def register(sub) -> None:
    p = sub.add_parser("config", help="print the MMU configuration as JSON, or list the presets",
                       description="Print the MMUConfig that the options describe (a preset, then overrides) as "
                                   "JSON: the object the hardware, the reference MMU and the testbench all take.")
    p.add_argument("--list-presets", action="store_true", help="one line per preset: its name and what it is for")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list_presets:
        width = max(map(len, PRESET_DOCS))
        for name, doc in PRESET_DOCS.items():
            print(f"{name:<{width}}  {doc}")
        return 0
    print(json.dumps(config_from_args(args).to_dict(), indent=2))
    return 0
