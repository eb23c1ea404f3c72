"""One address space's 4-level page tables, built in simulated physical memory.

Page-table pages come from the buddy allocator (order 0) and live in ``PhysMem``,
so the hardware walker reads exactly the bytes written here.  Like Linux,
``unmap`` only clears the leaf; page-table pages that become empty stay until
``free_empty_tables`` (Linux: free_pgtables at munmap) or ``destroy`` (exit_mmap).
Changing or freeing an entry the MMU may have cached is the caller's business:
it must send the matching flush (the shootdown).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from model.errors import UserError
from model.x86.physmem import PhysMem
from model.x86.pte import (
    ENTRIES_PER_TABLE,
    PAGE_SHIFT,
    PCD,
    PS,
    PWT,
    RW,
    US,
    XD,
    A,
    D,
    G,
    Level,
    P,
    PageSize,
    addr_mask,
    canonical,
    is_canonical,
)

# Linux arch/x86/include/asm/pgtable_types.h:
#   #define _PAGE_TABLE (__PP|__RW|_USR|___A|0|___D|0|0)
# Non-leaf entries grant everything; the leaf alone restricts access.
_PAGE_TABLE = P | RW | US | A | D

_TABLE = struct.Struct(f"<{ENTRIES_PER_TABLE}Q")
_SIZE_AT_LEVEL = {Level.PT: PageSize.SIZE_4K, Level.PD: PageSize.SIZE_2M, Level.PDPT: PageSize.SIZE_1G}
_DESCENT = tuple((level, level.shift) for level in (Level.PML4, Level.PDPT, Level.PD, Level.PT))


class OutOfMemory(Exception):
    """The buddy allocator had no page for a page-table page."""


class PageTableError(UserError):
    """A request the page tables cannot honour; the message names the address and the rule."""


@dataclass(frozen=True)
class LeafInfo:
    """A present leaf mapping: where it is, what it maps, and its own flags."""

    va: int  # page base, canonical
    pa: int  # page base (PAT bit 12 of a huge leaf excluded)
    size: PageSize
    level: Level
    entry_addr: int  # physical address of the leaf entry
    value: int

    writable = property(lambda self: bool(self.value & RW))
    user = property(lambda self: bool(self.value & US))
    nx = property(lambda self: bool(self.value & XD))
    global_ = property(lambda self: bool(self.value & G))
    accessed = property(lambda self: bool(self.value & A))
    dirty = property(lambda self: bool(self.value & D))


_PT, _PML4 = Level.PT, Level.PML4


def _is_leaf(level: Level, value: int) -> bool:
    """A PTE always maps a page; a PDPTE or PDE does when PS=1; a PML4E never does (its PS is reserved)."""
    return level == _PT or (level != _PML4 and bool(value & PS))


class PageTables:
    """Page tables rooted at ``pml4`` (the physical address to load into CR3)."""

    def __init__(self, mem: PhysMem, allocator, maxphyaddr: int = 40) -> None:
        self.mem = mem
        self.allocator = allocator
        self.maxphyaddr = maxphyaddr
        self._amask = addr_mask(maxphyaddr)
        self._tables: set[int] = set()  # pfns of the page-table pages we own
        self.pml4 = self._alloc_table()

    @property
    def table_pages(self) -> int:
        """Page-table pages in use (/proc/meminfo PageTables, in pages)."""
        return len(self._tables)

    # --- mappings -----------------------------------------------------------

    def map(self, va: int, pa: int, size: PageSize = PageSize.SIZE_4K, *, writable: bool = True,
            user: bool = True, nx: bool = False, global_: bool = False, accessed: bool = False,
            dirty: bool = False, pcd: bool = False, pwt: bool = False) -> int:
        """Install a leaf mapping ``va`` to ``pa``; returns the entry's physical address.

        Replacing a mapping of the same size is allowed (as a COW break does);
        a mapping of another size in the way is refused.
        """
        size = PageSize(size)
        self._check_va(va)
        if va & (size.bytes - 1) or pa & (size.bytes - 1):
            raise PageTableError(f"map {va:#x} -> {pa:#x}: both must be aligned to the {size.label} page size")
        if pa < 0 or pa + size.bytes > 1 << self.maxphyaddr:
            raise PageTableError(f"map {va:#x} -> {pa:#x}: the page must lie below 2**MAXPHYADDR "
                                 f"= {1 << self.maxphyaddr:#x}")
        level = size.leaf_level
        addr = self._slot(va, level, create=True)
        old = self.mem.read64(addr)
        if old & P and not _is_leaf(level, old):
            raise PageTableError(f"map {size.label} at {va:#x}: a page table of smaller pages is already "
                                 f"installed at {level.name} (unmap them and call free_empty_tables first)")
        value = pa | P
        for on, bit in ((writable, RW), (user, US), (pwt, PWT), (pcd, PCD), (accessed, A), (dirty, D),
                        (global_, G), (nx, XD), (level != Level.PT, PS)):
            if on:
                value |= bit
        self.mem.write64(addr, value)
        return addr

    def unmap(self, va: int) -> int | None:
        """Clear the entry mapping ``va``; returns its old value, None if it was empty.

        At the 4 KiB level a non-present but non-zero entry (a swap entry) is
        cleared and returned too, so the caller can release the swap slot.
        """
        addr, old = self._leaf_slot(va)
        if not old:
            return None
        self.mem.write64(addr, 0)
        return old

    def protect(self, va: int, *, writable: bool, user: bool, nx: bool) -> int | None:
        """Set R/W, U/S and XD of the present leaf mapping ``va`` (A, D, G are kept).

        Returns the old leaf value, None when nothing is mapped there (mprotect
        skips pages that were never faulted in).
        """
        addr, old = self._leaf_slot(va)
        if not old & P:
            return None
        new = old & ~(RW | US | XD)
        new |= (RW if writable else 0) | (US if user else 0) | (XD if nx else 0)
        self.mem.write64(addr, new)
        return old

    def lookup(self, va: int) -> LeafInfo | None:
        """The present leaf mapping ``va``, found the way software walks (no permission checks)."""
        level, addr, value = self._find_leaf(va)
        return self._leaf_info(va, level, addr, value) if value & P else None

    def test_and_clear_young(self, va: int) -> bool:
        """Linux ptep_test_and_clear_young: report and clear the leaf's A bit."""
        leaf = self.lookup(va)
        if leaf is None or not leaf.accessed:
            return False
        self.mem.write64(leaf.entry_addr, leaf.value & ~A)
        return True

    def leaves(self) -> Iterator[LeafInfo]:
        """Every present leaf mapping, in ascending virtual-address order."""
        yield from self._leaves(self.pml4, Level.PML4, 0)

    # --- raw entries (swap entries, deliberately odd tables for tests) -------

    def entry_addr(self, va: int, level: Level, *, create: bool = False) -> int | None:
        """Physical address of the ``level`` entry for ``va``.

        None when a table on the way is missing or a huge leaf sits above
        ``level`` (and ``create`` is False); ``create`` allocates missing tables.
        """
        self._check_va(va)
        return self._slot(va, Level(level), create)

    def get_entry(self, va: int, level: Level) -> int:
        """Raw value of the ``level`` entry for ``va``; 0 when it does not exist."""
        addr = self.entry_addr(va, level)
        return 0 if addr is None else self.mem.read64(addr)

    def set_entry(self, va: int, level: Level, value: int) -> int:
        """Write a raw 64-bit value as the ``level`` entry for ``va``, creating tables above it.

        Nothing is checked: this builds reserved bits, odd permissions or
        non-present entries on purpose.  Returns the entry's physical address.
        """
        if not 0 <= value < 1 << 64:
            raise PageTableError(f"entry value {value:#x}: must be a 64-bit unsigned integer")
        addr = self.entry_addr(va, level, create=True)
        self.mem.write64(addr, value)
        return addr

    def get_pte(self, va: int) -> int:
        """Raw 4 KiB-level PTE for ``va`` (a present PTE or a swap entry); 0 if none."""
        return self.get_entry(va, Level.PT)

    def set_pte(self, va: int, value: int) -> int:
        """Write a raw 4 KiB-level PTE, as the kernel stores swap entries in non-present PTEs."""
        return self.set_entry(va, Level.PT, value)

    # --- freeing page-table pages --------------------------------------------

    def free_empty_tables(self) -> int:
        """Free every page-table page below the PML4 whose entries are all zero.

        Clears the parent entry first, bottom-up, like Linux free_pgtables; the
        caller flushes the page-walk cache afterwards.  Returns the pages freed.
        """
        return self._free_empty(self.pml4, Level.PML4)

    def destroy(self) -> None:
        """Give every page-table page back to the allocator (Linux exit_mmap); the tables are gone after."""
        for pfn in sorted(self._tables):
            self.allocator.free_pages(pfn, 0)
        self._tables.clear()

    # --- internals ------------------------------------------------------------

    def _alloc_table(self) -> int:
        pfn = self.allocator.alloc_pages(0)
        if pfn is None:
            raise OutOfMemory("no free page for a page-table page")
        if not 0 <= pfn < self.mem.nr_frames or (pfn << PAGE_SHIFT) >> self.maxphyaddr:
            raise PageTableError(f"allocator returned pfn {pfn:#x}: outside physical memory or MAXPHYADDR")
        self.mem.zero_frame(pfn)
        self._tables.add(pfn)
        return pfn << PAGE_SHIFT

    def _check_va(self, va: int) -> None:
        if not 0 <= va < 1 << 64 or not is_canonical(va):
            raise PageTableError(f"virtual address {va:#x}: not canonical (bits 63:47 must all be equal)")

    def _slot(self, va: int, level: Level, create: bool) -> int | None:
        table = self.pml4
        for lvl, shift in _DESCENT:
            addr = table + 8 * ((va >> shift) & 0x1FF)
            if lvl == level:
                return addr
            value = self.mem.read64(addr)
            if not value & P:
                if not create:
                    return None
                if value:
                    raise PageTableError(f"{va:#x}: the non-present {lvl.name} entry {value:#x} is not empty; "
                                         f"refusing to replace it with a table")
                table = self._alloc_table()
                self.mem.write64(addr, table | _PAGE_TABLE)
            elif _is_leaf(lvl, value):
                if not create:
                    return None
                raise PageTableError(f"{va:#x}: already mapped by a {_SIZE_AT_LEVEL[lvl].label} page at "
                                     f"{lvl.name} level; unmap it before using smaller pages")
            else:
                table = value & self._amask

    def _find_leaf(self, va: int) -> tuple[Level, int, int]:
        """(level, entry address, value) of the last entry a software walk reads: a leaf or a non-present one."""
        self._check_va(va)
        table = self.pml4
        for level, shift in _DESCENT:
            addr = table + 8 * ((va >> shift) & 0x1FF)
            value = self.mem.read64(addr)
            if not value & P or _is_leaf(level, value):
                return level, addr, value
            table = value & self._amask

    def _leaf_slot(self, va: int) -> tuple[int | None, int]:
        """(entry address, value) of the slot mapping ``va``: the present leaf, or the 4 KiB-level PTE
        (which may hold a swap entry); (None, 0) when a table above is missing."""
        level, addr, value = self._find_leaf(va)
        return (addr, value) if value & P or level == Level.PT else (None, 0)

    def _leaf_info(self, va: int, level: Level, addr: int, value: int) -> LeafInfo:
        size = _SIZE_AT_LEVEL[level]
        base = canonical(va & ~(size.bytes - 1))
        return LeafInfo(va=base, pa=value & self._amask & ~(size.bytes - 1), size=size, level=level,
                        entry_addr=addr, value=value)

    def _entries(self, table: int) -> tuple[int, ...]:
        return _TABLE.unpack(self.mem.read_frame(table >> PAGE_SHIFT))

    def _leaves(self, table: int, level: Level, va_base: int) -> Iterator[LeafInfo]:
        for i, value in enumerate(self._entries(table)):
            if not value & P:
                continue
            va = va_base | (i << level.shift)
            if _is_leaf(level, value):
                yield self._leaf_info(va, level, table + 8 * i, value)
            else:
                yield from self._leaves(value & self._amask, Level(level - 1), va)

    def _free_empty(self, table: int, level: Level) -> int:
        freed = 0
        for i, value in enumerate(self._entries(table)):
            child = value & self._amask
            if not value & P or _is_leaf(level, value) or child >> PAGE_SHIFT not in self._tables:
                continue
            if level != Level.PD:
                freed += self._free_empty(child, Level(level - 1))
            if not any(self._entries(child)):
                self.mem.write64(table + 8 * i, 0)
                self._tables.discard(child >> PAGE_SHIFT)
                self.allocator.free_pages(child >> PAGE_SHIFT, 0)
                freed += 1
        return freed
