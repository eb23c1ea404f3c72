"""The reference page walker: docs/reference.md "The walk", rule by rule.

The hardware walker (hw/walker.py) must give the same answer, read the same
entries and make the same A/D writes in the same order.  ``walk`` is on the
scoreboard's hot path, so it works on raw 64-bit values and bit masks.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.x86.pte import (
    PF_ID,
    PF_P,
    PF_RSVD,
    PF_US,
    PF_WR,
    PS,
    RW,
    US,
    XD,
    A,
    Access,
    D,
    FaultKind,
    G,
    Level,
    P,
    PageSize,
    addr_mask,
    reserved_mask,
)


@dataclass(frozen=True)
class ControlRegs:
    """CR3 and the CR0/CR4/EFER bits the walk depends on (CR0.WP, EFER.NXE, CR4.SMEP/SMAP/PCIDE)."""

    cr3: int = 0
    wp: bool = True
    nxe: bool = True
    smep: bool = False
    smap: bool = False
    pcide: bool = False

    def pml4_base(self, maxphyaddr: int) -> int:
        """CR3[M-1:12]."""
        return self.cr3 & addr_mask(maxphyaddr)

    @property
    def pcid(self) -> int:
        """CR3[11:0] with CR4.PCIDE = 1; PCID 0 otherwise (SDM 4.10.1)."""
        return self.cr3 & 0xFFF if self.pcide else 0


@dataclass(frozen=True)
class WalkStart:
    """Where a page-walk-cache hit lets the walk begin."""

    level: Level  # the level whose entry is read next (PDPT, PD or PT)
    table: int  # physical base of that table
    writable: bool  # R/W, U/S and XD combined over the levels above
    user: bool
    nx: bool

    def __post_init__(self) -> None:
        if self.level not in (Level.PDPT, Level.PD, Level.PT):
            raise ValueError(f"WalkStart level {self.level!r}: must be PDPT, PD or PT (a PWC entry is non-leaf)")


@dataclass(slots=True)
class WalkResult:
    fault: FaultKind
    error_code: int
    paddr: int | None
    size: PageSize | None
    frame: int | None  # page base: paddr with the page offset cleared
    writable: bool  # combined over every level used (on a fault: over the levels passed)
    user: bool
    nx: bool
    dirty: bool  # leaf D after the walk's own write
    global_: bool  # leaf G
    reads: list[tuple[Level, int, int]]  # (level, entry address, value read), in order
    writes: list[tuple[int, int]]  # (entry address, new value) A/D writes, in order; [] on a fault
    # Non-leaf entries read, top-down: (level, next table base, value after the A write,
    # combined writable, user, nx down to this level); what the PWC is filled with.  [] on a fault.
    nonleaf: list[tuple[Level, int, int, bool, bool, bool]]


# Enum members bound once: looking a member up on its class costs more than a whole level of the walk.
_WRITE, _FETCH = Access.WRITE, Access.FETCH
_NO_FAULT, _PAGE_FAULT, _NONCANONICAL = FaultKind.NONE, FaultKind.PAGE, FaultKind.NONCANONICAL
_LEVELS = (None, Level.PT, Level.PD, Level.PDPT, Level.PML4)
_SIZES = (None, PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G)
_OFFSET_MASKS = (None, (1 << 12) - 1, (1 << 21) - 1, (1 << 30) - 1)


def access_allowed(writable: bool, user_page: bool, nx: bool, access: Access, user: bool,
                   ctrl: ControlRegs) -> bool:
    """Step 4 of the walk (SDM 4.6): may this access use a page with these combined rights?"""
    if access == _FETCH:
        if ctrl.nxe and nx:
            return False
        if user:
            return user_page
        return not (ctrl.smep and user_page)
    if user:
        return user_page and (writable or access != _WRITE)
    if ctrl.smap and user_page:
        return False
    return writable or access != _WRITE or not ctrl.wp


def fault_error_code(access: Access, user: bool, ctrl: ControlRegs, *, protection: bool, rsvd: bool) -> int:
    """Page-fault error code (SDM 4.7).  A reserved-bit fault is on a present entry, so it sets P too."""
    code = PF_P if protection or rsvd else 0
    if rsvd:
        code |= PF_RSVD
    if access == _WRITE:
        code |= PF_WR
    if user:
        code |= PF_US
    if access == _FETCH and (ctrl.nxe or ctrl.smep):
        code |= PF_ID
    return code


_MASKS: dict[tuple[int, bool], tuple[int, tuple[int, ...], tuple[int, ...]]] = {}


def _masks(maxphyaddr: int, nxe: bool) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """Address mask and the reserved masks per level number (table entry, leaf entry), memoised."""
    table = (0,) + tuple(reserved_mask(_LEVELS[n], False, maxphyaddr, nxe) for n in range(1, 5))
    leaf = (0,) + tuple(reserved_mask(_LEVELS[n], True, maxphyaddr, nxe) for n in range(1, 5))
    _MASKS[maxphyaddr, nxe] = (addr_mask(maxphyaddr), table, leaf)
    return _MASKS[maxphyaddr, nxe]


def _fault(access, user, ctrl, reads, writable, user_page, nx, *, protection: bool, rsvd: bool) -> WalkResult:
    return WalkResult(_PAGE_FAULT, fault_error_code(access, user, ctrl, protection=protection, rsvd=rsvd),
                      None, None, None, writable, user_page, nx, False, False, reads, [], [])


def walk(mem, ctrl: ControlRegs, vaddr: int, access: Access, user: bool, *, maxphyaddr: int = 40,
         start: WalkStart | None = None, apply: bool = True) -> WalkResult:
    """Translate ``vaddr`` by walking the tables in ``mem`` (anything with ``read64``/``write64``).

    ``start`` begins below PML4 with what a page-walk-cache hit supplies.  With
    ``apply`` the A/D writes are made in ``mem``; they are reported either way.
    Writes are per entry read, so a table that maps itself (one entry read at
    two levels) gets one write per read.
    """
    top = vaddr >> 47
    if top and top != 0x1FFFF:
        return WalkResult(_NONCANONICAL, 0, None, None, None, False, False, False, False, False,
                          [], [], [])
    nxe = ctrl.nxe
    amask, rsvd_table, rsvd_leaf = _MASKS.get((maxphyaddr, nxe)) or _masks(maxphyaddr, nxe)
    if start is None:
        level, table, writable, user_page, nx = 4, ctrl.cr3 & amask, True, True, False
    else:
        level, table = int(start.level), start.table
        writable, user_page, nx = start.writable, start.user, start.nx
    read64 = mem.read64
    reads: list[tuple[Level, int, int]] = []
    nonleaf: list[tuple[Level, int, int, bool, bool, bool]] = []
    while True:
        addr = table + (((vaddr >> (3 + 9 * level)) & 0x1FF) << 3)
        value = read64(addr)
        reads.append((_LEVELS[level], addr, value))
        if not value & P:
            return _fault(access, user, ctrl, reads, writable, user_page, nx, protection=False, rsvd=False)
        leaf = level == 1 or (level != 4 and value & PS)
        if value & (rsvd_leaf[level] if leaf else rsvd_table[level]):
            return _fault(access, user, ctrl, reads, writable, user_page, nx, protection=True, rsvd=True)
        if not value & RW:
            writable = False
        if not value & US:
            user_page = False
        if value & XD:
            nx = True
        if leaf:
            break
        table = value & amask
        nonleaf.append((_LEVELS[level], table, value | A, writable, user_page, nx))
        level -= 1

    if not access_allowed(writable, user_page, nx, access, user, ctrl):
        return _fault(access, user, ctrl, reads, writable, user_page, nx, protection=True, rsvd=False)

    offset_mask = _OFFSET_MASKS[level]
    frame = value & amask & ~offset_mask
    writes = [(addr, old | A) for _, addr, old in reads[:-1] if not old & A]
    leaf_new = value | A | (D if access == _WRITE else 0)
    if leaf_new != value:
        writes.append((reads[-1][1], leaf_new))
    if apply:
        write64 = mem.write64
        for addr, new in writes:
            write64(addr, new)
    return WalkResult(_NO_FAULT, 0, frame | (vaddr & offset_mask), _SIZES[level], frame, writable, user_page, nx,
                      bool(leaf_new & D), bool(value & G), reads, writes, nonleaf)
