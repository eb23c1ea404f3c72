"""`mmu verilog`: write the Verilog of the MMU top for a configuration.

    mmu verilog --out build/mmu.v [config options]

The file is self-contained (Icarus compiles it on its own: ``iverilog -g2012``);
the top module has clock ``clk`` and synchronous active-high reset ``rst``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.cmd_config import add_config_args, config_from_args
from model.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("verilog", help="write the MMU top as Verilog (for Icarus or synthesis)",
                       description="Convert the Amaranth MMU of a configuration to one self-contained Verilog file "
                                   "(clock clk, synchronous active-high reset rst).")
    p.add_argument("--out", required=True, metavar="FILE", help="Verilog file to write (parent directories are created)")
    p.add_argument("--name", default="mmu_top", help="top module name (default: mmu_top)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if not args.name.isidentifier():
        raise UserError(f"--name {args.name!r}: must be a Verilog identifier (letters, digits, _)")
    from hw.export import top_ports, verilog_text  # Amaranth is imported only when needed

    out = Path(args.out)
    text, mmu = verilog_text(cfg, args.name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as e:
        raise UserError(f"--out {out}: cannot write: {e.strerror}") from None
    print(f"wrote {out}: module {args.name}, {len(text.splitlines())} lines")
    t = cfg
    print(f"  itlb {t.itlb.entries} entries / {t.itlb.ways} ways / {t.itlb.policy.value}, "
          f"{t.itlb.superpage_entries} superpage; dtlb {t.dtlb.entries} / {t.dtlb.ways} / {t.dtlb.policy.value}, "
          f"{t.dtlb.superpage_entries} superpage; pwc {t.pwc_entries}; M={t.maxphyaddr}")
    print("  ports:")
    for name, width, direction in top_ports(mmu):
        print(f"    {direction:<6} {name:<18} [{width}]")
    return 0
