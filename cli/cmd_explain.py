"""`mmu explain`: one translation step by step, as the four-level paging figure of a textbook.

    mmu explain VADDR                       the built-in demo address space (see --help)
    mmu explain WORKLOAD VADDR [--pid N]    a process's page tables after a workload ran

VADDR is a number (0x-hex or decimal) or, with a workload, a variable of the
process (``malloc buf 64K`` makes ``buf``).  The same translation is made twice
on a fresh MMU, so the output shows the cold walk and the warm TLB hit, and
their cost in cycles on the Amaranth design (sim/pysim.py).  With a workload and
``--user``, a page fault is followed into the kernel model: the Linux path that handled
it, what it mapped, the shootdown, ``used`` before and after, and the retried walk
(model/teach/fault_path.py).
"""

from __future__ import annotations

import argparse
import dataclasses

from cli.arguments import comma_list
from cli.cmd_config import add_config_args, config_from_args
from model.errors import UserError
from model.mm.mmap import find_vma
from model.proc.task_mmu import vma_name
from model.teach.explain import (
    access_phrase,
    demo_address_space,
    demo_table,
    explain,
    parse_access,
    parse_vaddr,
    vaddr_str,
)
from model.user.workload import run_workload
from model.x86.pte import FaultKind


def register(sub) -> None:
    p = sub.add_parser(
        "explain", help="explain one translation: indices, entries, checks, fault, A/D writes, cycles",
        description="Explain one address translation step by step.",
        epilog="Without a WORKLOAD, VADDR is looked up in this demo address space (model/teach/explain.py):\n"
               + demo_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="+", metavar="[WORKLOAD] VADDR",
                   help="a named workload or file (optional) and the virtual address")
    p.add_argument("--pid", type=int, help="process whose page tables to use (default: the first live one)")
    p.add_argument("--access", default="r", metavar="r|w|x", help="read, write or instruction fetch (default r)")
    p.add_argument("--user", action="store_true", help="a user-mode access (default: supervisor)")
    p.add_argument("--smep", action="store_true", help="set CR4.SMEP")
    p.add_argument("--smap", action="store_true", help="set CR4.SMAP")
    p.add_argument("--no-wp", action="store_true", help="clear CR0.WP (supervisor writes ignore R/W)")
    p.add_argument("--no-nxe", action="store_true", help="clear EFER.NXE (XD becomes a reserved bit)")
    p.add_argument("--after", default="", metavar="VADDR,...",
                   help="translate these first (same access) to warm the TLB and page-walk cache")
    p.add_argument("--seed", type=int, default=0, help="seed of the workload run (default 0)")
    p.add_argument("--no-hw", action="store_true", help="skip the hardware simulation (no cycle counts)")
    add_config_args(p)
    p.set_defaults(func=run)


def _address(text: str, task) -> int:
    """A number, or a workload variable of ``task``."""
    if task is not None and text in task.vars:
        return task.vars[text][0]
    return parse_vaddr(text)


def _process(k, pid: int | None):
    live = sorted(k.tasks.values(), key=lambda t: t.pid)
    if pid is None:
        if not live:
            raise UserError("explain: the workload left no live process (every one exited or was killed)")
        return live[0]
    for task in live:
        if task.pid == pid:
            return task
    pids = ", ".join(f"{t.pid} ({t.name})" for t in live) or "none"
    raise UserError(f"--pid {pid}: no live process with that pid (live: {pids})")


def run(args: argparse.Namespace) -> int:
    if len(args.target) > 2:
        raise UserError(f"explain: expected [WORKLOAD] VADDR, got {len(args.target)} arguments")
    access = parse_access(args.access)
    cfg = config_from_args(args)
    *workload, addr_text = args.target
    task = None
    if workload:
        k, _ = run_workload(workload[0], seed=args.seed)
        task = _process(k, args.pid)
        mem, ctrl = k.mem, k.ctrl(task)
    else:
        if args.pid is not None:
            raise UserError("--pid needs a WORKLOAD (the demo address space has no processes)")
        mem, ctrl = demo_address_space(cfg.maxphyaddr)
    ctrl = dataclasses.replace(ctrl, wp=not args.no_wp, nxe=not args.no_nxe, smep=args.smep, smap=args.smap)
    vaddr = _address(addr_text, task)
    warmup = tuple(_address(a, task) for a in comma_list("after", args.after)) if args.after else ()
    ex = explain(mem, ctrl, vaddr, access, args.user, cfg, warmup=warmup)
    if not args.no_hw:
        from sim.pysim import time_translations  # Amaranth is imported only when needed
        ex.hw, _ = time_translations(cfg, mem, ctrl, ex.requests())
    if task is None:
        print("Address space: the built-in demo (mmu explain --help lists its mappings).")
    else:
        print(f"Workload {workload[0]} (seed {args.seed}): process {task.pid} ({task.name}), "
              f"{access_phrase(access, args.user)} of {vaddr_str(vaddr)}")
        vma = find_vma(task.mm, vaddr)
        if vma is None or vma.start > vaddr:
            print("VMA: none contains this address (a user fault here is a SIGSEGV)")
        else:
            print(f"VMA: {vma.start:08x}-{vma.end:08x} {vma.perms()} {vma_name(task.mm, vma)[0]}".rstrip())
    print(ex.render(), end="")
    if task is not None:
        print()
        print(_kernel_side(k, task, ex, cfg), end="")
    return 1 if ex.mismatches() else 0


def _kernel_side(k, task, ex, cfg) -> str:
    """What happens after the hardware's answer: the kernel's fault handling and the retried walk."""
    from model.teach.fault_path import fault_to_follow, follow_fault

    r = ex.first.response
    if r.fault == FaultKind.NONCANONICAL:
        return ("The kernel's side: #GP is not a page fault; for a user access the kernel sends SIGSEGV "
                "(general protection) and the process dies.\n")
    code = fault_to_follow(ex)
    if code is None:
        return "The kernel's side: nothing to do, the translation succeeded.\n"
    if not ex.user:
        return ("The kernel's side: not followed. A supervisor access that faults is the kernel's own: Linux resolves "
                "it only inside uaccess helpers (copy_from_user), else it oopses; use --user for a process's access.\n")
    return follow_fault(k, task, ex.vaddr, ex.access, ex.user, code, cfg).render()
