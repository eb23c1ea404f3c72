"""Reference walks per second and PhysMem read64 per second.

Usage: python bench/bench_walker.py [--pages N] [--seconds S] [--seed SEED]
Prints figures only; nothing here asserts about time.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from model.mm.page_alloc import BuddyAllocator
from model.reference.ref_walker import ControlRegs, walk
from model.x86.pgtable import PageTables
from model.x86.physmem import PhysMem
from model.x86.pte import A, Access, D


def rate(fn, items, seconds: float) -> float:
    """Calls of ``fn`` per second, cycling over ``items`` for about ``seconds``."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for item in items:
            fn(item)
        done += len(items)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=4096, help="4 KiB pages mapped (default 4096)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per figure (default 1.0)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("MMU_SEED", "1")))
    args = ap.parse_args()
    print(f"seed {args.seed} (replay with --seed {args.seed} or MMU_SEED={args.seed})")
    rng = random.Random(args.seed)

    mem = PhysMem(1 << 30)
    pt = PageTables(mem, BuddyAllocator(1 << 16, 1 << 16))
    vpns = rng.sample(range(1 << 20), args.pages)  # spread over 4 GiB of user space
    vaddrs = [vpn << 12 for vpn in vpns]
    for va in vaddrs:
        pt.map(va, rng.randrange(1 << 16) << 12)
    ctrl = ControlRegs(cr3=pt.pml4)
    print(f"{args.pages} pages mapped, {pt.table_pages} page-table pages, {mem.touched_frames} frames touched")

    no_apply = rate(lambda va: walk(mem, ctrl, va, Access.READ, True, apply=False), vaddrs, args.seconds)
    print(f"walk 4K read, apply=False : {no_apply:12,.0f} walks/s")

    pte_addrs = {va: pt.lookup(va).entry_addr for va in vaddrs}

    def walk_write_fresh(va: int) -> None:
        # Clear A/D of the leaf first, so every walk makes a write.
        leaf_addr = pte_addrs[va]
        mem.write64(leaf_addr, mem.read64(leaf_addr) & ~(A | D))
        walk(mem, ctrl, va, Access.WRITE, True)

    applied = rate(walk_write_fresh, vaddrs, args.seconds)
    print(f"walk 4K write, apply=True : {applied:12,.0f} walks/s (incl. one read64+write64 to reset A/D)")

    entry_addrs = [addr for va in vaddrs for _, addr, _ in walk(mem, ctrl, va, Access.READ, True).reads]
    reads = rate(mem.read64, entry_addrs, args.seconds)
    print(f"PhysMem.read64            : {reads:12,.0f} reads/s")


if __name__ == "__main__":
    main()
