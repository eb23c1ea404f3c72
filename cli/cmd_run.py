"""`mmu run`: run a workload on the golden kernel and print what happened and the reports asked for.

    mmu run --list
    mmu run WORKLOAD [--seed N] [--mem SIZE] [--swap SIZE] [--report free,top,vmstat,maps,...] [--why]

WORKLOAD is a named workload (model/user/workloads/NAME.wl) or a file path; the format is
described in docs/kernel.md and model/user/workload.py.
"""

from __future__ import annotations

import argparse
import sys

from cli.arguments import comma_list
from model.errors import UserError
from model.teach import why
from model.user import reports
from model.user.workload import named_workloads, parse_size, run_workload


def add_kernel_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("workload", nargs=None if required else "?", metavar="WORKLOAD",
                   help="a named workload (mmu run --list) or a file")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (ASLR), printed (default 0)")
    p.add_argument("--mem", metavar="SIZE", help="physical memory, e.g. 64M, 1G (default: the workload's boot line)")
    p.add_argument("--swap", metavar="SIZE", help="swap device size, e.g. 0, 32M (default: the workload's)")


def sizes(args) -> dict:
    return {"mem": parse_size(args.mem, "--mem") if args.mem else None,
            "swap": parse_size(args.swap, "--swap") if args.swap else None}


def register(sub) -> None:
    p = sub.add_parser("run", help="run a workload on the golden kernel model",
                       description="Run a workload (a named one or a file in the format of docs/kernel.md) on the "
                                   "golden kernel: what each line did, then the reports asked for.")
    add_kernel_args(p)
    p.add_argument("--list", action="store_true", help="list the named workloads and exit")
    p.add_argument("--report", metavar="KINDS",
                   help=f"comma-separated reports after the run: {','.join(reports.KINDS)} (default: none)")
    p.add_argument("--why", action="store_true",
                   help="explain malloc's brk/mmap choices, MemAvailable, reclaim and the OOM killer of this run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, desc in named_workloads():
            print(f"{name:<16} {desc}")
        return 0
    if not args.workload:
        raise UserError("run: name a WORKLOAD (mmu run --list shows the named ones)")
    kinds = comma_list("report", args.report) if args.report is not None else []
    for kind in kinds:
        if kind not in reports.KINDS:
            raise UserError(f"--report {kind!r}: one of {', '.join(reports.KINDS)}")
    print(f"seed {args.seed}")
    k, _ = run_workload(args.workload, seed=args.seed, out=sys.stdout.write, **sizes(args))
    sys.stdout.write(reports.render(k, kinds))
    if args.why:
        sys.stdout.write(why.explain(k))
    return 0
