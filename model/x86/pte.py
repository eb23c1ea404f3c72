"""x86-64 4-level paging-structure entries, error codes and address split.

Bit positions and names follow the Intel SDM, Vol. 3A, chapter 4.5 (4-level
paging), tables 4-15 to 4-20, and 4.7 (page-fault error code).  Everything the
hardware, the reference walker and the kernel model agree on about the format
lives here, so there is exactly one definition of each bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# --- entry bits (all levels unless noted) ---------------------------------
P = 1 << 0  # present
RW = 1 << 1  # read/write: 0 = read-only
US = 1 << 2  # user/supervisor: 1 = user accessible
PWT = 1 << 3  # page-level write-through
PCD = 1 << 4  # page-level cache disable
A = 1 << 5  # accessed
D = 1 << 6  # dirty (leaf only)
PS = 1 << 7  # page size: 1 GiB in a PDPTE, 2 MiB in a PDE; reserved in a PML4E; PAT in a PTE
G = 1 << 8  # global (leaf only)
XD = 1 << 63  # execute-disable (NX); reserved when IA32_EFER.NXE = 0

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ENTRIES_PER_TABLE = 512

# --- page-fault error code (SDM 4.7) ----------------------------------------
PF_P = 1 << 0  # 0: not present, 1: protection violation
PF_WR = 1 << 1  # 1: the access was a write
PF_US = 1 << 2  # 1: user-mode access
PF_RSVD = 1 << 3  # 1: a reserved bit was set in some paging-structure entry
PF_ID = 1 << 4  # 1: instruction fetch (only when NXE or SMEP is on)


class Level(IntEnum):
    """Paging-structure levels, numbered as the walk descends (PML4 first)."""

    PML4 = 4
    PDPT = 3
    PD = 2
    PT = 1

    @property
    def shift(self) -> int:
        """Lowest virtual-address bit of this level's index (PT: 12 ... PML4: 39)."""
        return PAGE_SHIFT + 9 * (self - 1)

    def index(self, vaddr: int) -> int:
        return (vaddr >> self.shift) & 0x1FF


class PageSize(IntEnum):
    """The three page sizes of 4-level paging; the value is the port encoding."""

    SIZE_4K = 0
    SIZE_2M = 1
    SIZE_1G = 2

    @property
    def shift(self) -> int:
        return (12, 21, 30)[self]

    @property
    def bytes(self) -> int:
        return 1 << self.shift

    @property
    def leaf_level(self) -> Level:
        return (Level.PT, Level.PD, Level.PDPT)[self]

    @property
    def label(self) -> str:
        return ("4K", "2M", "1G")[self]


class Access(IntEnum):
    """Kinds of access on the translate port (the value is the port encoding)."""

    READ = 0
    WRITE = 1
    FETCH = 2


class FaultKind(IntEnum):
    """Fault field of a translate response (the value is the port encoding)."""

    NONE = 0
    PAGE = 1  # #PF, with an error code
    NONCANONICAL = 2  # #GP: bits 63:47 not all equal; never walked


def is_canonical(vaddr: int) -> bool:
    """48-bit canonical form: bits 63:47 all equal (SDM 3.3.7.1)."""
    top = (vaddr >> 47) & ((1 << 17) - 1)
    return top == 0 or top == (1 << 17) - 1


def canonical(vaddr: int) -> int:
    """Sign-extend bit 47 of a 48-bit address to 64 bits."""
    vaddr &= (1 << 48) - 1
    return vaddr | (0xFFFF << 48) if vaddr >> 47 else vaddr


def split_vaddr(vaddr: int) -> dict[str, int]:
    """PML4/PDPT/PD/PT indices and the page offset, as in SDM figure 4-8."""
    return {
        "pml4": Level.PML4.index(vaddr),
        "pdpt": Level.PDPT.index(vaddr),
        "pd": Level.PD.index(vaddr),
        "pt": Level.PT.index(vaddr),
        "offset": vaddr & (PAGE_SIZE - 1),
    }


def addr_mask(maxphyaddr: int) -> int:
    """Bits 12..M-1: where an entry holds a physical address."""
    return ((1 << maxphyaddr) - 1) & ~(PAGE_SIZE - 1)


def reserved_mask(level: Level, leaf: bool, maxphyaddr: int, nxe: bool) -> int:
    """Bits that must be 0 in a present entry at ``level`` (SDM 4.5, tables 4-15..4-20).

    M..51 are reserved everywhere; XD (bit 63) is reserved when NXE = 0; PS is
    reserved in a PML4E; a 2 MiB leaf reserves address bits 20:13 and a 1 GiB
    leaf 29:13 (bit 12 is PAT in both, ignored here).
    """
    mask = ((1 << 52) - 1) & ~((1 << maxphyaddr) - 1)
    if not nxe:
        mask |= XD
    if level == Level.PML4:
        mask |= PS
    if leaf and level == Level.PD:
        mask |= ((1 << 21) - 1) & ~((1 << 13) - 1)
    if leaf and level == Level.PDPT:
        mask |= ((1 << 30) - 1) & ~((1 << 13) - 1)
    return mask


@dataclass(frozen=True)
class PTE:
    """A decoded paging-structure entry; ``encode`` gives back the 64-bit value.

    ``addr`` is the physical address field (bits 12..51) unshifted: the next
    table's base for a non-leaf entry, the page frame for a 4 KiB leaf, and the
    page base plus the PAT bit (bit 12) for a huge leaf.
    """

    present: bool = False
    writable: bool = False
    user: bool = False
    pwt: bool = False
    pcd: bool = False
    accessed: bool = False
    dirty: bool = False
    ps: bool = False
    global_: bool = False
    xd: bool = False
    addr: int = 0
    ignored: int = 0  # bits 9-11 and 52-62, which software may use freely

    IGNORED_MASK = (0x7 << 9) | (((1 << 11) - 1) << 52)

    @classmethod
    def decode(cls, value: int) -> "PTE":
        return cls(
            present=bool(value & P),
            writable=bool(value & RW),
            user=bool(value & US),
            pwt=bool(value & PWT),
            pcd=bool(value & PCD),
            accessed=bool(value & A),
            dirty=bool(value & D),
            ps=bool(value & PS),
            global_=bool(value & G),
            xd=bool(value & XD),
            addr=value & ((1 << 52) - 1) & ~(PAGE_SIZE - 1),
            ignored=value & cls.IGNORED_MASK,
        )

    def encode(self) -> int:
        if self.addr & (PAGE_SIZE - 1) or self.addr >> 52:
            raise ValueError(f"PTE addr {self.addr:#x}: must be 4 KiB aligned and below 2**52")
        if self.ignored & ~self.IGNORED_MASK:
            raise ValueError(f"PTE ignored bits {self.ignored:#x}: only bits 9-11 and 52-62 are ignored")
        value = self.addr | self.ignored
        for flag, bit in (
            (self.present, P), (self.writable, RW), (self.user, US), (self.pwt, PWT), (self.pcd, PCD),
            (self.accessed, A), (self.dirty, D), (self.ps, PS), (self.global_, G), (self.xd, XD),
        ):
            if flag:
                value |= bit
        return value

    def describe(self) -> str:
        """Flags in the order the SDM tables list them, e.g. ``XD G D A U W P``."""
        names = [("XD", self.xd), ("G", self.global_), ("PS", self.ps), ("D", self.dirty), ("A", self.accessed),
                 ("PCD", self.pcd), ("PWT", self.pwt), ("U", self.user), ("W", self.writable), ("P", self.present)]
        return " ".join(n for n, on in names if on) or "-"
