"""`mmu free|top|vmstat|maps|buddyinfo|slabinfo WORKLOAD`: run a workload, then look at the machine
the way the Linux tool would.

    mmu free WORKLOAD [-b|-k|-m|-g|--tebi|--pebi|--kilo|--mega|--giga|--tera|--peta|-h] [--si] [-w] [-l] [-t] [-v]
                      [--procps 3.3|4] [--watch] [--why]
    mmu top WORKLOAD [-E k|m|g|t|p|e] [-o FIELD] [--fields mem|FIELD,...] [--why]
    mmu vmstat WORKLOAD [-a] [-w] [-s] [-f] [-S b|k|K|m|M] [--why]
    mmu maps WORKLOAD PID|NAME [--why]
    mmu buddyinfo WORKLOAD [--why]
    mmu slabinfo WORKLOAD [--why]

Every command also takes --seed, --mem and --swap like `mmu run`.  The view
goes to stdout exactly as the tool prints it (the seed goes to stderr); the
tool's options mean what they mean for the tool.  --watch (free only) prints
a row per workload operation instead, and --why adds the reasons behind the
numbers (model/teach/why.py).  Each view is rendered by model/user/reports.py:view, the
same code as `mmu run --report`.
"""

from __future__ import annotations

import argparse
import sys

from cli.arguments import comma_list
from cli.cmd_run import add_kernel_args, sizes
from model.errors import UserError
from model.teach import why
from model.user import procps, reports
from model.user.workload import run_workload

# free's unit options: (short, long, unit, powers of 1000)
_FREE_UNITS = (("-b", "--bytes", "b", False), ("-k", "--kibi", "k", False), ("-m", "--mebi", "m", False),
               ("-g", "--gibi", "g", False), (None, "--tebi", "t", False), (None, "--pebi", "p", False),
               (None, "--kilo", "k", True), (None, "--mega", "m", True), (None, "--giga", "g", True),
               (None, "--tera", "t", True), (None, "--peta", "p", True))


def _common(p: argparse.ArgumentParser) -> None:
    add_kernel_args(p, required=True)
    p.add_argument("--why", action="store_true",
                   help="explain malloc's brk/mmap choices, MemAvailable, reclaim and the OOM killer of this run")


def register(sub) -> None:
    p = sub.add_parser("free", add_help=False, help="run a workload and print free (procps-ng)",
                       description="Run a workload, then print what procps-ng's free prints for the model's "
                                   "/proc/meminfo (4.x, or 3.3.17 with --procps 3.3).")
    _common(p)
    units = p.add_mutually_exclusive_group()
    for short, long, unit, si in _FREE_UNITS:
        names = [short, long] if short else [long]
        word = "bytes" if unit == "b" else long[2:] + "bytes"
        units.add_argument(*names, dest="unit_si", action="store_const", const=(unit, si),
                           help=f"show output in {word}")
    units.add_argument("-h", "--human", dest="unit_si", action="store_const", const=("h", None),
                       help="show human-readable output")
    p.add_argument("--si", action="store_true", help="use powers of 1000 not 1024")
    p.add_argument("-w", "--wide", action="store_true", help="buffers and cache in separate columns")
    p.add_argument("-l", "--lohi", action="store_true", help="show low and high memory statistics")
    p.add_argument("-t", "--total", action="store_true", help="show a total for RAM + swap")
    p.add_argument("-v", "--committed", action="store_true", help="show committed memory and commit limit")
    p.add_argument("--procps", choices=procps.PROCPS_VERSIONS, default="4",
                   help="print what procps-ng 4.0.2 (4, used = MemTotal - MemAvailable) or 3.3.17 (3.3, used = "
                        "MemTotal - MemFree - Buffers - Cache, older -h rounding) prints (default 4)")
    p.add_argument("--watch", action="store_true",
                   help="a row per workload operation: free's numbers after each line and what the kernel did")
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.set_defaults(func=run_free)

    p = sub.add_parser("top", help="run a workload and print top -b -n 1 (procps-ng 4)",
                       description="Run a workload, then print top -b -n 1 of the model's processes (procps-ng 4).")
    _common(p)
    p.add_argument("-E", dest="scale", choices=tuple(procps.TOP_SCALES), default="m",
                   help="summary memory unit (default m: MiB)")
    p.add_argument("-o", dest="sort", default="%CPU", metavar="FIELD", help="sort field (default %%CPU)")
    p.add_argument("--fields", default="default", metavar="LIST",
                   help="task columns: default, mem (VIRT RES SHR %MEM nMin nMaj), or a comma-separated list "
                        f"of {','.join(procps.TOP_FIELDS)}".replace("%", "%%"))
    p.set_defaults(func=run_top)

    p = sub.add_parser("vmstat", help="run a workload and print vmstat (procps-ng 4)",
                       description="Run a workload, then print vmstat (procps-ng 4) over the model's /proc files.")
    _common(p)
    p.add_argument("-a", "--active", action="store_true", help="inactive/active memory instead of buff/cache")
    p.add_argument("-w", "--wide", action="store_true", help="wide output")
    p.add_argument("-s", "--stats", action="store_true", help="event counter statistics")
    p.add_argument("-f", "--forks", action="store_true", help="number of forks since boot")
    p.add_argument("-S", "--unit", default="K", metavar="UNIT", help="b, k (1000), K (1024, default), m or M")
    p.set_defaults(func=run_vmstat)

    p = sub.add_parser("maps", help="run a workload and print /proc/PID/maps of one process",
                       description="Run a workload, then print /proc/PID/maps of one live process.")
    _common(p)
    p.add_argument("pid", metavar="PID", help="a live process at the end of the run: its pid or its name")
    p.set_defaults(func=run_maps)

    for name in ("buddyinfo", "slabinfo"):
        p = sub.add_parser(name, help=f"run a workload and print /proc/{name}",
                           description=f"Run a workload, then print the model's /proc/{name}.")
        _common(p)
        p.set_defaults(func=run_file, kind=name)


def _run(args, listeners=()):
    print(f"seed {args.seed}", file=sys.stderr)
    k, _ = run_workload(args.workload, seed=args.seed, listeners=listeners, **sizes(args))
    return k


def _finish(k, args, text: str) -> int:
    sys.stdout.write(text)
    if args.why:
        sys.stdout.write(why.explain(k))
    return 0


def run_free(args) -> int:
    unit, si = args.unit_si or (None, False)
    si = si or args.si
    if args.watch:
        def watch(k):
            return reports.FreeWatch(k, sys.stdout.write, unit=unit, si=si, procps_version=args.procps)
        return _finish(_run(args, [watch]), args, "")
    k = _run(args)
    return _finish(k, args, reports.view(k, "free", unit=unit, si=si, wide=args.wide, lohi=args.lohi,
                                         total=args.total, committed=args.committed, procps=args.procps))


def run_top(args) -> int:
    fields = {"default": procps.DEFAULT_FIELDS, "mem": procps.MEMORY_FIELDS}.get(args.fields)
    fields = fields or tuple(comma_list("fields", args.fields))
    procps.check_top_fields(fields, args.sort)  # before the run, which may take a while
    k = _run(args)
    return _finish(k, args, reports.view(k, "top", fields=fields, sort=args.sort, scale=args.scale))


def run_vmstat(args) -> int:
    if args.unit not in procps.VMSTAT_UNITS:
        raise UserError(f"vmstat -S {args.unit!r}: -S requires k, K, m or M (default is KiB)")
    if args.stats and args.forks:
        raise UserError("vmstat: -s and -f are different reports; give one")
    k = _run(args)
    if args.stats:
        text = reports.view(k, "vmstat", mode="stats", unit=args.unit)
    elif args.forks:
        text = reports.view(k, "vmstat", mode="forks")
    else:
        text = reports.view(k, "vmstat", active=args.active, wide=args.wide, unit=args.unit)
        seconds = k.cputime.jiffies / 100
        print(f"si, so, bi, bo, in and cs are per second of the model's CPU clock since boot: one 10 ms tick "
              f"(USER_HZ 100) per workload operation, {k.cputime.jiffies} ticks = {seconds:g} s in this run; the "
              f"model has no wall clock", file=sys.stderr)
    return _finish(k, args, text)


def run_maps(args) -> int:
    k = _run(args)
    return _finish(k, args, reports.view(k, "maps", pid=args.pid))


def run_file(args) -> int:
    k = _run(args)
    return _finish(k, args, reports.view(k, args.kind))
