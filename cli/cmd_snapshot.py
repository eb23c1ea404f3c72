"""`mmu snapshot`: run a workload and write the machine's state for offline tools.

    mmu snapshot WORKLOAD [--seed N] [--mem SIZE] [--swap SIZE] --out DIR

DIR receives ``phys.bin`` (the raw physical memory image: the byte at offset X
is physical address X, the file is exactly the configured memory size),
``mappings.json`` (every live process: pid, name, cr3, and each present leaf
mapping: va, pa, size, writable, user, nx), ``meminfo`` and ``free.txt``.
Standard x86-64 4-level tables, so a memory-forensics tool such as
volatility3's Intel32e layer can translate the virtual addresses from them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli.cmd_run import add_kernel_args, sizes
from model.errors import UserError
from model.proc import show_mem
from model.user import procps
from model.user.workload import run_workload


def register(sub) -> None:
    p = sub.add_parser("snapshot", help="run a workload and write phys.bin, mappings.json, meminfo, free.txt",
                       description="Run a workload and write the machine's state for offline tools: the raw "
                                   "physical memory image, every live mapping, meminfo and free.")
    add_kernel_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write (created if missing)")
    p.set_defaults(func=run)


def mappings(k) -> list[dict]:
    out = []
    for task in sorted(k.tasks.values(), key=lambda t: t.pid):
        pt = task.mm.pt
        leaves = [{"va": leaf.va, "pa": leaf.pa, "size": leaf.size.bytes, "writable": leaf.writable,
                   "user": leaf.user, "nx": leaf.nx} for leaf in pt.leaves()]
        out.append({"pid": task.pid, "name": task.name, "cr3": pt.pml4 | task.mm.pcid, "mappings": leaves})
    return out


def write_snapshot(k, out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        k.mem.export_image(out / "phys.bin")
        (out / "mappings.json").write_text(json.dumps({"mem_bytes": k.mem.size, "processes": mappings(k)},
                                                      indent=1) + "\n")
        meminfo = show_mem.meminfo(k)
        (out / "meminfo").write_text(meminfo)
        (out / "free.txt").write_text(procps.free_text(meminfo))
    except OSError as e:
        raise UserError(f"--out {out}: cannot write: {e.strerror}") from None


def run(args: argparse.Namespace) -> int:
    if not args.workload:
        raise UserError("snapshot: name a WORKLOAD (mmu run --list shows the named ones)")
    print(f"seed {args.seed}")
    k, _ = run_workload(args.workload, seed=args.seed, out=sys.stdout.write, **sizes(args))
    write_snapshot(k, Path(args.out))
    print(f"wrote {args.out}/phys.bin ({k.mem.size} bytes), mappings.json, meminfo, free.txt")
    return 0
