"""Throughput of the buddy and slab allocators: alloc+free pairs per second.

Each figure runs against a 1 GiB zone already holding a seeded random mix of
live allocations, so pairs find split blocks and partial slabs as a running
kernel would.  Usage: python bench/bench_buddy.py [seed]
"""

from __future__ import annotations

import random
import sys
import time

from model.mm.page_alloc import BuddyAllocator
from model.mm.slub import SlabAllocator

ZONE_PAGES = 1 << 18  # 1 GiB
PAIRS = 200_000


def rate(pairs: int, start: float) -> str:
    return f"{pairs / (time.perf_counter() - start):12,.0f} pairs/s"


def bench_order0(rng: random.Random) -> str:
    buddy = BuddyAllocator(0, ZONE_PAGES)
    held = [buddy.alloc_pages(0) for _ in range(ZONE_PAGES // 2)]
    for pfn in rng.sample(held, len(held) // 2):
        buddy.free_pages(pfn)
    start = time.perf_counter()
    for _ in range(PAIRS):
        buddy.free_pages(buddy.alloc_pages(0))
    return rate(PAIRS, start)


def bench_mixed(rng: random.Random) -> str:
    buddy = BuddyAllocator(0, ZONE_PAGES)
    orders = rng.choices(range(4), weights=[8, 4, 2, 1], k=PAIRS)
    live = [(buddy.alloc_pages(o), o) for o in orders[:4096]]
    start = time.perf_counter()
    for order in orders:
        pfn = buddy.alloc_pages(order)
        i = rng.randrange(len(live))
        buddy.free_pages(*live[i])
        live[i] = (pfn, order)
    return rate(PAIRS, start)


def bench_kmalloc(rng: random.Random) -> str:
    slab = SlabAllocator(BuddyAllocator(0, ZONE_PAGES))
    sizes = [rng.choice((8, 32, 64, 96, 128, 192, 256, 512, 1024, 4096)) for _ in range(PAIRS)]
    live = [slab.kmalloc(s) for s in sizes[:8192]]
    start = time.perf_counter()
    for size in sizes:
        addr = slab.kmalloc(size)
        i = rng.randrange(len(live))
        slab.kfree(live[i])
        live[i] = addr
    return rate(PAIRS, start)


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    print(f"seed {seed}, zone {ZONE_PAGES} pages, {PAIRS} pairs each")
    print(f"buddy order 0          {bench_order0(random.Random(seed))}")
    print(f"buddy orders 0..3      {bench_mixed(random.Random(seed))}")
    print(f"kmalloc + kfree        {bench_kmalloc(random.Random(seed))}")


if __name__ == "__main__":
    main()
