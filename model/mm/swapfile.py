"""The swap device and the x86-64 swap-entry encoding (Linux mm/swapfile.c, asm/pgtable_64.h).

A swapped-out anonymous page leaves a swap entry in its non-present PTE.  The
encoding is Linux's for x86-64 (arch/x86/include/asm/pgtable_64.h, with the
L1TF inversion of asm/pgtable-invert.h)::

    | TYPE (63-59) | ~OFFSET (58-9) | 0 0 0 0 0 0 0 0 0 |   bit 0 (P) = 0

``__swp_entry(type, offset) = (~offset << SWP_OFFSET_SHIFT >> SWP_TYPE_BITS)
| (type << (64 - SWP_TYPE_BITS))`` with ``SWP_OFFSET_SHIFT = 9 + 5``.  The
offset is stored inverted so that a stale TLB entry built from it would point
at non-existent high physical memory (L1TF).  P = 0, so the walker reports a
not-present fault and never looks at the other bits.

``swap_map[offset]`` counts the PTEs (and shmem slots) that hold the entry, as
Linux's swap_map does; the slot is freed when the count reaches zero.
"""

from __future__ import annotations

import heapq

from model.errors import UserError
from model.x86.pte import PAGE_SIZE

SWP_TYPE_BITS = 5
SWP_OFFSET_FIRST_BIT = 9  # _PAGE_BIT_PROTNONE (8, aliased with G) + 1
SWP_OFFSET_SHIFT = SWP_OFFSET_FIRST_BIT + SWP_TYPE_BITS
_MASK64 = (1 << 64) - 1
MAX_SWAP_OFFSET = (1 << (64 - SWP_OFFSET_SHIFT)) - 1


def swp_entry_to_pte(swp_type: int, offset: int) -> int:
    """``__swp_entry()`` then ``__swp_entry_to_pte()``: the 64-bit non-present PTE."""
    if not 0 <= swp_type < 1 << SWP_TYPE_BITS or not 0 <= offset <= MAX_SWAP_OFFSET:
        raise ValueError(f"swap entry type={swp_type} offset={offset}: out of range")
    return ((((~offset) << SWP_OFFSET_SHIFT) & _MASK64) >> SWP_TYPE_BITS) | (swp_type << (64 - SWP_TYPE_BITS))


def pte_to_swp_entry(pte: int) -> tuple[int, int]:
    """``__swp_type()`` and ``__swp_offset()`` of a swap PTE: (type, offset)."""
    return pte >> (64 - SWP_TYPE_BITS), ((((~pte) << SWP_TYPE_BITS) & _MASK64) >> SWP_OFFSET_SHIFT)


class SwapDevice:
    """One swap area (type 0) of ``size`` bytes; page contents are kept per slot.

    Slot 0 holds the swap header in Linux (mkswap), so usable slots start at 1
    and SwapTotal is one page less than the device, as ``swapon`` reports.
    """

    def __init__(self, size: int, swp_type: int = 0) -> None:
        if size < 0 or size % PAGE_SIZE:
            raise UserError(f"swap size {size}: must be a multiple of 4 KiB and >= 0")
        self.type = swp_type
        self.nr_slots = max(size // PAGE_SIZE - 1, 0)
        self.swap_map: dict[int, int] = {}  # offset -> users
        self.data: dict[int, bytes] = {}
        # Free offsets: the freed ones (a heap, all below _next) and every offset from _next up, never
        # used; the lowest comes first, and a device costs the host nothing until it is used.
        self._freed: list[int] = []
        self._next = 1

    @property
    def total_pages(self) -> int:
        return self.nr_slots

    @property
    def free_pages(self) -> int:
        return len(self._freed) + self.nr_slots + 1 - self._next

    def alloc_slot(self) -> int | None:
        """``get_swap_page()``: the lowest free offset, or None when the device is full."""
        if self._freed:
            offset = heapq.heappop(self._freed)
        elif self._next <= self.nr_slots:
            offset = self._next
            self._next += 1
        else:
            return None
        self.swap_map[offset] = 0
        return offset

    def write(self, offset: int, data: bytes, users: int) -> None:
        """Store a page (swap_writepage) and record how many entries will refer to it."""
        self.data[offset] = data
        self.swap_map[offset] = users

    def read(self, offset: int) -> bytes:
        return self.data[offset]

    def dup(self, offset: int) -> None:
        """``swap_duplicate()``: one more PTE holds the entry (fork)."""
        self.swap_map[offset] += 1

    def put(self, offset: int) -> None:
        """``swap_free()``: one holder gone; the slot is freed with the last one."""
        count = self.swap_map[offset] - 1
        if count:
            self.swap_map[offset] = count
            return
        del self.swap_map[offset]
        self.data.pop(offset, None)
        heapq.heappush(self._freed, offset)
