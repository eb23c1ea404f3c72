"""Quiz: trace a buddy allocator through allocations and frees (mm/page_alloc.c).

The allocator is ``model.mm.page_alloc.BuddyAllocator`` on a small zone; the
worked answer reads its free lists after every step and narrates the
difference: which block was split and which halves went back (``expand()``),
or which buddies merged (``__free_one_page()``).
"""

from __future__ import annotations

import random
import string

from model.mm.page_alloc import BuddyAllocator
from model.teach.quiz import Knob, Quiz, integer

DESCRIPTION = "a sequence of alloc/free orders on a small zone: the pfns returned and the free lists"
KNOBS = (
    Knob("zone-pages", "N", "pages in the zone (a power of two, 8..1024)", integer("zone-pages", 8, 1024,
                                                                                     power_of_two=True)),
    Knob("requests", "N", "how many allocations and frees (1..26)", integer("requests", 1, 26)),
)


def free_lists(buddy: BuddyAllocator, max_order: int) -> list[list[int]]:
    """Each order's free list, head (the block the next allocation takes) first."""
    return [buddy.free_list(o) for o in range(max_order + 1)]


def show(lists: list[list[int]]) -> str:
    return "  ".join(f"{o}:[{' '.join(map(str, pfns))}]" for o, pfns in enumerate(lists)) or "-"


def _narrate_alloc(before: list[list[int]], after: list[list[int]], order: int) -> str:
    (block, big), = [(p, o) for o, pfns in enumerate(before) for p in pfns if p not in after[o]]
    if big == order:
        return f"take the head of order {order}"
    halves = ", ".join(f"{block + (1 << k)} (order {k})" for k in range(big - 1, order - 1, -1))
    return f"smallest free block is {block} (order {big}): split, keep the low half, free {halves}"


def _narrate_free(before: list[list[int]], after: list[list[int]], order: int, pfn: int) -> str:
    (block, final), = [(p, o) for o, pfns in enumerate(after) for p in pfns if p not in before[o]]
    # the block being freed grows by merging: at order o it starts at pfn with its low o bits cleared
    merged = ", ".join(f"{(pfn >> o << o) ^ (1 << o)} (order {o})" for o in range(order, final))
    stop = "" if final == len(before) - 1 else f"buddy {block ^ (1 << final)} (order {final}) is not free"
    if not merged:
        return f"{stop}: no merge; {block} goes to the head of order {final}"
    return f"merge with the free buddies {merged} into {block} (order {final})" + (f"; {stop}" if stop else "")


def make(seed: int, *, zone_pages: int | None = None, requests: int | None = None) -> Quiz:
    rng = random.Random(seed)
    nr_pages = zone_pages or rng.choice((16, 32))
    max_order = nr_pages.bit_length() - 1
    buddy = BuddyAllocator(0, nr_pages)
    start = free_lists(buddy, max_order)
    live: dict[str, tuple[int, int]] = {}
    names = iter(string.ascii_uppercase)
    steps, rows = [], []
    drawn = rng.randint(7, 9)
    for _ in range(requests or drawn):
        before = free_lists(buddy, max_order)
        feasible = [o for o in range(3) if any(before[o:])]
        if live and (rng.random() < 0.4 or not feasible):
            name = rng.choice(sorted(live))
            pfn, order = live.pop(name)
            buddy.free_pages(pfn, order)
            after = free_lists(buddy, max_order)
            steps.append(f"free {name}")
            rows.append([steps[-1], f"{pfn} (order {order})", _narrate_free(before, after, order, pfn), show(after)])
            continue
        order = rng.choice(feasible)
        name = next(names)
        pfn = buddy.alloc_pages(order)
        live[name] = (pfn, order)
        after = free_lists(buddy, max_order)
        steps.append(f"{name} = alloc order {order}")
        rows.append([steps[-1], str(pfn), _narrate_alloc(before, after, order), show(after)])

    question = (
        f"A zone of {nr_pages} pages, pfn 0..{nr_pages - 1}, with free lists of orders 0..{max_order} "
        f"(a block of order k is 2^k pages,\naligned to 2^k).  Initially free: {show(start)}.\n"
        "An allocation takes the head of the smallest non-empty free list of at least its order and splits it,\n"
        "keeping the low half and putting each upper half at the head of its list.  A free merges the block\n"
        "with its buddy (pfn XOR 2^order) while that buddy is free at the same order, then puts it at the head.\n\n"
        "Steps:\n" + "".join(f"  {n}. {s}\n" for n, s in enumerate(steps, 1))
        + "\nWhich pfn does each allocation return, and what are the free lists at the end (head first)?\n")
    worked = "Trace (free lists as order:[pfns], head first):\n" + "".join(
        f"  {n}. {step}  ->  {pfn}\n     {what}\n     free lists: {lists}\n" for n, (step, pfn, what, lists)
        in enumerate(rows, 1))
    allocs = " ".join(f"{r[0].split()[0]}={r[1]}" for r in rows if "alloc" in r[0])
    answer = f"Answer: {allocs}; free lists {show(free_lists(buddy, max_order))}"
    return Quiz(question, worked, answer)
