"""The reference page-walk cache: non-leaf entries that let a walk skip upper levels.

docs/reference.md ("Page-walk cache") fixes it: fully associative, true LRU,
PCID-tagged (there are no global PWC entries), shared by both TLBs.  An entry
caches one PML4E, PDPTE or PDE for the virtual-address prefix it covers, with
the next table's base and the R/W, U/S and XD combined down to it, which is
everything the walker needs to resume one level below.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.reference.ref_replacement import LRU
from model.reference.ref_walker import WalkStart
from model.x86.pte import Level

# The cached levels, deepest first: a lookup prefers the longest prefix.
_DEEPEST_FIRST = (Level.PD, Level.PDPT, Level.PML4)
_VA_MASK = (1 << 48) - 1


@dataclass(frozen=True, slots=True)
class PWCEntry:
    """One cached non-leaf entry; ``prefix`` is vaddr[47:level.shift], the bits that select it."""

    level: Level
    pcid: int
    prefix: int
    table: int  # the next table's base
    value: int  # the entry as written back (A set)
    writable: bool
    user: bool
    nx: bool

    def start(self) -> WalkStart:
        return WalkStart(level=Level(self.level - 1), table=self.table, writable=self.writable, user=self.user,
                         nx=self.nx)


def _prefix(vaddr: int, level: Level) -> int:
    return (vaddr & _VA_MASK) >> level.shift


class PageWalkCache:
    """``entries`` slots; ``entries == 0`` turns the cache off (always misses, keeps nothing)."""

    def __init__(self, entries: int) -> None:
        self.size = entries
        self._slots: list[PWCEntry | None] = [None] * entries
        self._where: dict[tuple[int, int, int], int] = {}  # (level, pcid, prefix) -> slot
        self._lru = LRU(1, entries)

    def lookup(self, vaddr: int, pcid: int) -> WalkStart | None:
        """Where the walk of ``vaddr`` may start: the deepest match, made most recently used."""
        for level in _DEEPEST_FIRST:
            slot = self._where.get((level, pcid, _prefix(vaddr, level)))
            if slot is not None:
                self._lru.touch(0, slot)
                return self._slots[slot].start()
        return None

    def fill(self, vaddr: int, pcid: int, nonleaf) -> None:
        """Insert, top-down, the non-leaf entries a successful walk read from DRAM.

        ``nonleaf`` holds ``(level, next_table, value, writable, user, nx)`` tuples.
        """
        if not self.size:
            return
        for level, table, value, writable, user, nx in nonleaf:
            level = Level(level)
            key = (level, pcid, _prefix(vaddr, level))
            slot = self._where.get(key)
            if slot is None:
                slot = self._slots.index(None) if None in self._slots else self._lru.evict(0)
                old = self._slots[slot]
                if old is not None:
                    del self._where[(old.level, old.pcid, old.prefix)]
                self._where[key] = slot
            self._slots[slot] = PWCEntry(level, pcid, key[2], table, value, bool(writable), bool(user), bool(nx))
            self._lru.touch(0, slot)

    def flush_all(self) -> None:
        self._drop(lambda e: True)

    def flush_pcid(self, pcid: int) -> None:
        self._drop(lambda e: e.pcid == pcid)

    def entries(self) -> list[PWCEntry]:
        """The valid entries by slot."""
        return [e for e in self._slots if e is not None]

    def _drop(self, doomed) -> None:
        for slot, e in enumerate(self._slots):
            if e is not None and doomed(e):
                self._slots[slot] = None
                del self._where[(e.level, e.pcid, e.prefix)]
