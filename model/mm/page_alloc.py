"""The buddy page allocator of one zone, after Linux mm/page_alloc.c.

The zone (node 0, zone Normal) owns the 4 KiB frames [start_pfn, start_pfn +
nr_pages).  Free memory is kept as aligned blocks of 2^order frames, one free
list per order 0..MAX_ORDER.  An allocation takes the smallest free block that
is large enough and splits it, handing out the low half and putting the upper
halves back (``expand()``); a free merges the block with its buddy, ``pfn ^
(1 << order)`` (``__find_buddy_pfn()`` in mm/internal.h), for as long as the
buddy is free at the same order (``__free_one_page()``).

Free lists are LIFO like Linux's (a freed block goes to the head, an
allocation takes the head), so a run replays exactly; Linux's
``buddy_merge_likely()`` tail placement and migrate types are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isqrt

from model.config import ConfigError
from model.x86.pte import PAGE_SHIFT

MAX_ORDER = 10  # MAX_PAGE_ORDER: the largest block is 1024 pages = 4 MiB
NR_PAGE_ORDERS = MAX_ORDER + 1
WATERMARK_SCALE_FACTOR = 10  # default of /proc/sys/vm/watermark_scale_factor (range 1..3000)
ZONE_NAME = "Normal"
NODE_ID = 0


class BadFree(Exception):
    """A free of memory the allocator did not hand out in that form.

    A kernel bug, not user input: the message names the pfn (or address),
    the order and the rule broken, and the allocator is left unchanged.
    """


@dataclass(frozen=True)
class Watermarks:
    """A zone's watermarks in pages (``zone->_watermark[WMARK_MIN..WMARK_HIGH]``).

    Below ``low`` kswapd is woken; below ``min`` an allocation reclaims
    directly; kswapd stops once free memory is back above ``high``.
    """

    min: int
    low: int
    high: int


def calculate_min_free_kbytes(managed_pages: int) -> int:
    """Default ``vm.min_free_kbytes`` for a zone of ``managed_pages`` pages.

    mm/page_alloc.c ``calculate_min_free_kbytes()``:
    ``lowmem_kbytes = nr_free_buffer_pages() * (PAGE_SIZE >> 10)`` (at boot no
    watermark is set yet, so that is every managed page),
    ``min_free_kbytes = clamp(int_sqrt(lowmem_kbytes * 16), 128, 262144)``.
    """
    lowmem_kbytes = managed_pages << (PAGE_SHIFT - 10)
    return min(max(isqrt(lowmem_kbytes * 16), 128), 262144)


def setup_per_zone_wmarks(managed_pages: int, min_free_kbytes: int,
                          watermark_scale_factor: int = WATERMARK_SCALE_FACTOR) -> Watermarks:
    """The watermarks of the only lowmem zone, as mm/page_alloc.c ``__setup_per_zone_wmarks()``.

    ``pages_min = min_free_kbytes >> (PAGE_SHIFT - 10)``, shared among lowmem
    zones by managed pages (one zone here: all of it) gives ``min``; then
    ``delta = max(min >> 2, mult_frac(managed_pages, watermark_scale_factor, 10000))``,
    ``low = min + delta`` and ``high = low + delta``.
    """
    pages_min = min_free_kbytes >> (PAGE_SHIFT - 10)
    delta = max(pages_min >> 2, managed_pages * watermark_scale_factor // 10000)
    return Watermarks(min=pages_min, low=pages_min + delta, high=pages_min + 2 * delta)


class BuddyAllocator:
    """The buddy allocator of one zone of ``nr_pages`` frames from ``start_pfn``.

    ``min_free_kbytes`` (None: the kernel's default for this size) and
    ``watermark_scale_factor`` set the watermarks, as writing the sysctls does.
    """

    def __init__(self, start_pfn: int, nr_pages: int, min_free_kbytes: int | None = None,
                 watermark_scale_factor: int = WATERMARK_SCALE_FACTOR) -> None:
        if start_pfn < 0:
            raise ConfigError(f"start_pfn={start_pfn}: must be >= 0")
        if nr_pages < 1:
            raise ConfigError(f"nr_pages={nr_pages}: the zone needs at least one page")
        if min_free_kbytes is not None and min_free_kbytes < 0:
            raise ConfigError(f"min_free_kbytes={min_free_kbytes}: must be >= 0")
        if not 1 <= watermark_scale_factor <= 3000:
            raise ConfigError(f"watermark_scale_factor={watermark_scale_factor}: must be between 1 and 3000")
        self.start_pfn = start_pfn
        self.nr_pages = nr_pages
        self.end_pfn = start_pfn + nr_pages
        # One dict per order used as an ordered set of block heads: O(1) add,
        # remove and LIFO pop.  _free_order answers "is this a free block head
        # of that order?" (PageBuddy and buddy_order() in Linux).
        self._free_lists: list[dict[int, None]] = [{} for _ in range(NR_PAGE_ORDERS)]
        self._free_order: dict[int, int] = {}
        # The boot-time order-MAX_ORDER blocks never yet allocated, [_pristine, _pristine_end) in steps of
        # 2^MAX_ORDER: the tail of that free list, kept as a range so a zone costs the host nothing
        # until it is used (a 1 TiB zone has 262144 of them).
        self._pristine = self._pristine_end = 0
        self._allocated: dict[int, int] = {}
        self._nr_free = nr_pages
        self._free_pages_memory(start_pfn, self.end_pfn)
        self.min_free_kbytes = calculate_min_free_kbytes(nr_pages) if min_free_kbytes is None else min_free_kbytes
        self.watermarks = setup_per_zone_wmarks(nr_pages, self.min_free_kbytes, watermark_scale_factor)

    def _free_pages_memory(self, start: int, end: int) -> None:
        """Carve [start, end) into maximal aligned blocks (mm/memblock.c ``__free_pages_memory()``).

        Boot memory goes to the tail of the free lists (FPI_TO_TAIL in
        ``__free_pages_core()``), so a fresh zone hands out its lowest blocks first.
        """
        blocks = []
        while start < end:
            order = MAX_ORDER if start == 0 else min(MAX_ORDER, (start & -start).bit_length() - 1)
            while start + (1 << order) > end:
                order -= 1
            if order == MAX_ORDER:  # the maximal blocks are one contiguous run: keep it as a range
                self._pristine = start
                self._pristine_end = start = end & ~((1 << MAX_ORDER) - 1)
                continue
            blocks.append((start, order))
            start += 1 << order
        for pfn, order in reversed(blocks):  # the list head is the end a LIFO pop takes
            self._add_to_free_list(pfn, order)

    def _add_to_free_list(self, pfn: int, order: int) -> None:
        self._free_lists[order][pfn] = None
        self._free_order[pfn] = order

    def _del_from_free_list(self, pfn: int, order: int) -> None:
        del self._free_lists[order][pfn]
        del self._free_order[pfn]

    # --- allocation -------------------------------------------------------------

    def alloc_pages(self, order: int = 0) -> int | None:
        """First pfn of a free block of 2^order pages, or None when no block is
        large enough (the caller reclaims and retries, as the kernel does).

        ``__rmqueue_smallest()``: take the smallest free block of at least this
        order, then ``expand()`` it.  An order above MAX_ORDER is a kernel bug
        (Linux warns and fails) and raises ValueError.
        """
        if not 0 <= order <= MAX_ORDER:
            raise ValueError(f"alloc_pages(order={order}): order must be 0..{MAX_ORDER}")
        for current in range(order, NR_PAGE_ORDERS):
            free_list = self._free_lists[current]
            if free_list or (current == MAX_ORDER and self._pristine < self._pristine_end):
                if free_list:
                    pfn = free_list.popitem()[0]
                    del self._free_order[pfn]
                else:
                    pfn = self._pristine
                    self._pristine += 1 << MAX_ORDER
                while current > order:  # expand(): keep the low half, free the upper half
                    current -= 1
                    self._add_to_free_list(pfn + (1 << current), current)
                self._allocated[pfn] = order
                self._nr_free -= 1 << order
                return pfn
        return None

    def free_pages(self, pfn: int, order: int = 0) -> None:
        """Give back the block of 2^order pages at ``pfn`` and merge it with its
        free buddies (``__free_one_page()``).  A free of anything but exactly an
        allocated block raises BadFree and changes nothing."""
        self._check_free(pfn, order)
        del self._allocated[pfn]
        self._nr_free += 1 << order
        while order < MAX_ORDER:
            buddy = pfn ^ (1 << order)
            if self._free_order.get(buddy) != order:
                break
            self._del_from_free_list(buddy, order)
            pfn &= buddy  # combined_pfn = buddy_pfn & pfn
            order += 1
        self._add_to_free_list(pfn, order)

    def _check_free(self, pfn: int, order: int) -> None:
        def bad(rule: str) -> BadFree:
            return BadFree(f"free_pages(pfn={pfn:#x}, order={order}): {rule}")

        if not self.start_pfn <= pfn < self.end_pfn:
            raise bad(f"pfn is outside zone {ZONE_NAME} [{self.start_pfn:#x}, {self.end_pfn:#x})")
        if not 0 <= order <= MAX_ORDER:
            raise bad(f"order must be 0..{MAX_ORDER}")
        allocated = self._allocated.get(pfn)
        if allocated == order:
            return
        if allocated is not None:
            raise bad(f"the block at this pfn was allocated with order {allocated}")
        if pfn & ((1 << order) - 1):
            raise bad(f"pfn is not aligned to its order (a multiple of {1 << order})")
        if self.is_free(pfn):
            raise bad("the page is already free (double free)")
        raise bad("pfn is not the first page of an allocated block")

    # --- state --------------------------------------------------------------------

    @property
    def nr_free_pages(self) -> int:
        return self._nr_free

    @property
    def free_area(self) -> list[int]:
        """Free blocks per order 0..MAX_ORDER (``zone->free_area[order].nr_free``)."""
        counts = [len(free_list) for free_list in self._free_lists]
        counts[MAX_ORDER] += self._nr_pristine
        return counts

    @property
    def _nr_pristine(self) -> int:
        return (self._pristine_end - self._pristine) >> MAX_ORDER

    def free_list(self, order: int) -> list[int]:
        """First pfns of the free blocks of one order, head (the block the next
        allocation of that order takes) first: ``zone->free_area[order].free_list``."""
        head = list(reversed(self._free_lists[order]))
        return head + list(range(self._pristine, self._pristine_end, 1 << MAX_ORDER)) if order == MAX_ORDER else head

    def is_free(self, pfn: int) -> bool:
        """True when the page lies inside a free block of any order."""
        if self._pristine <= pfn < self._pristine_end:
            return True
        for order in range(NR_PAGE_ORDERS):
            if self._free_order.get(pfn & ~((1 << order) - 1)) == order:
                return True
        return False

    def allocated_order(self, pfn: int) -> int | None:
        """Order of the allocated block that starts at ``pfn``; None if no allocated block starts there."""
        return self._allocated.get(pfn)

    def zone_watermark_ok(self, order: int, mark: int) -> bool:
        """Whether an order-``order`` allocation may proceed above ``mark`` pages
        (mm/page_alloc.c ``__zone_watermark_ok()``, without reserves or CMA).

        The pages of the request beyond its first do not count as free
        (``(1 << order) - 1``); free pages must then be strictly above the
        mark, and for order > 0 a free block of at least that order must exist.
        """
        free_pages = self._nr_free - ((1 << order) - 1)
        if free_pages <= mark:
            return False
        if order == 0:
            return True
        return self._nr_pristine > 0 or any(self._free_lists[o] for o in range(order, NR_PAGE_ORDERS))

    def buddyinfo(self) -> str:
        """This zone's line of /proc/buddyinfo, byte for byte as mm/vmstat.c
        ``frag_show_print()`` writes it: ``"Node %d, zone %8s "``, then
        ``"%6lu "`` per order, then a newline."""
        counts = "".join(f"{n:6d} " for n in self.free_area)
        return f"Node {NODE_ID}, zone {ZONE_NAME:>8s} {counts}\n"
