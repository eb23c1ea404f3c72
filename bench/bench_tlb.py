"""Throughput of the reference TLB and of the reference MMU on a mostly-hitting stream.

Trace replays push tens of millions of accesses through ``RefMMU.translate``,
so these two figures bound how long a replay takes.  Each geometry gets a
seeded random stream over a working set that fits the TLB, with about 3% of
accesses going to pages outside it (misses that walk, through the PWC).
Usage: python bench/bench_tlb.py [seed]
"""

from __future__ import annotations

import random
import sys
import time
from types import SimpleNamespace

from model.config import MMUConfig, Policy, TLBConfig
from model.mm.page_alloc import BuddyAllocator
from model.reference.ref_mmu import RefMMU
from model.reference.ref_tlb import TLB
from model.reference.ref_walker import ControlRegs
from model.x86.pgtable import PageTables
from model.x86.physmem import PhysMem
from model.x86.pte import Access, PageSize

LOOKUPS = 1_000_000
TRANSLATIONS = 300_000
GEOMETRIES = [TLBConfig(32, 4, Policy.PLRU, 4), TLBConfig(16, 16, Policy.LRU, 4),
              TLBConfig(256, 8, Policy.RANDOM, 8), TLBConfig(64, 4, Policy.FIFO, 4)]


def bench_lookups(cfg: TLBConfig, rng: random.Random) -> float:
    tlb = TLB(cfg, 0xACE1)
    vas = [page << 12 for page in range(cfg.entries)]  # consecutive VPNs fill every set exactly
    for va in vas:
        tlb.fill(va, 0, SimpleNamespace(size=PageSize.SIZE_4K, frame=va, global_=False, writable=True, user=True,
                                        nx=False, dirty=True))
    stream = [rng.choice(vas) | rng.randrange(4096) for _ in range(LOOKUPS)]
    lookup = tlb.lookup
    start = time.perf_counter()
    for va in stream:
        lookup(va, 0)
    return LOOKUPS / (time.perf_counter() - start)


def bench_translate(cfg: TLBConfig, rng: random.Random) -> tuple[float, float]:
    mem = PhysMem(64 << 20)
    pt = PageTables(mem, BuddyAllocator(1, mem.nr_frames - 1))
    hot = [0x40_0000 + (i << 12) for i in range(cfg.entries)]
    cold = [0x8000_0000 + (i << 12) for i in range(4096)]
    for i, va in enumerate(hot + cold):
        pt.map(va, 0x1_0000_0000 + (i << 12))
    mmu = RefMMU(MMUConfig(itlb=cfg, dtlb=cfg), mem, ControlRegs(cr3=pt.pml4))
    accesses = (Access.READ, Access.READ, Access.WRITE, Access.FETCH)
    stream = [(rng.choice(cold) if rng.random() < 0.03 else rng.choice(hot), rng.choice(accesses))
              for _ in range(TRANSLATIONS)]
    translate = mmu.translate
    start = time.perf_counter()
    for va, access in stream:
        translate(va, access, True)
    rate = TRANSLATIONS / (time.perf_counter() - start)
    return rate, mmu.counters["hits"] / mmu.counters["lookups"]


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    print(f"seed {seed}")
    for cfg in GEOMETRIES:
        name = f"{cfg.entries:3d} entries {cfg.ways:2d}-way {cfg.policy.value:6s}"
        lookups = bench_lookups(cfg, random.Random(seed))
        translations, hit_rate = bench_translate(cfg, random.Random(seed))
        print(f"{name}  TLB lookups (hits) {lookups:12,.0f}/s   RefMMU translations {translations:10,.0f}/s "
              f"(hit rate {hit_rate:.1%})")


if __name__ == "__main__":
    main()
