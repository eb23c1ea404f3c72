"""`mmu verilog`: write the Verilog of the MMU top for a configuration.

    mmu verilog [--out FILE] [config options]

Without ``--out`` the file is ``build/mmu-NAME.v``, NAME the preset the configuration
is or ``cfg-`` and a hash of it, so two configurations never overwrite each other;
the file's header comment holds the whole configuration.

The file is self-contained (Icarus compiles it on its own: ``iverilog -g2012``);
the top module has clock ``clk`` and synchronous active-high reset ``rst``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.cmd_config import add_config_args, config_from_args
from model.config import hardware_name
from model.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("verilog", help="write the MMU top as Verilog (for Icarus or synthesis)",
                       description="Convert the Amaranth MMU of a configuration to one self-contained Verilog file "
                                   "(clock clk, synchronous active-high reset rst).")
    p.add_argument("--out", metavar="FILE", help="Verilog file to write (parent directories are created; default: "
                                                   "build/mmu-NAME.v, NAME the preset or a hash of the configuration)")
    p.add_argument("--name", default="mmu_top", help="top module name (default: mmu_top)")
    add_config_args(p)
    p.set_defaults(func=run)


def _check_writable(out: Path) -> None:
    """Refuse a path that cannot be written, by opening it (and making its folders) before the elaboration."""
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory; name the Verilog file")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a"):
            pass
    except OSError as e:
        raise UserError(f"--out {out}: cannot write: {e.strerror}") from None


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if not args.name.isidentifier():
        raise UserError(f"--name {args.name!r}: must be a Verilog identifier (letters, digits, _)")
    out = Path(args.out) if args.out else Path("build") / f"mmu-{hardware_name(cfg)}.v"
    _check_writable(out)  # before the elaboration, which takes seconds
    from hw.export import top_ports, verilog_text  # Amaranth is imported only when needed

    text, mmu = verilog_text(cfg, args.name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as e:
        raise UserError(f"--out {out}: cannot write: {e.strerror}") from None
    print(f"wrote {out}: module {args.name}, configuration {hardware_name(cfg)}, {len(text.splitlines())} lines")
    t = cfg
    print(f"  itlb {t.itlb.entries} entries / {t.itlb.ways} ways / {t.itlb.policy.value}, "
          f"{t.itlb.superpage_entries} superpage; dtlb {t.dtlb.entries} / {t.dtlb.ways} / {t.dtlb.policy.value}, "
          f"{t.dtlb.superpage_entries} superpage; pwc {t.pwc_entries}; M={t.maxphyaddr}")
    print("  ports:")
    for name, width, direction in top_ports(mmu):
        print(f"    {direction:<6} {name:<18} [{width}]")
    return 0
