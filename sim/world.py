"""Random page tables and random request/flush/CR3 streams for the co-simulation regressions.

Everything draws from one ``random.Random`` given by the caller (seeded from the
test's SEED), so a run replays exactly.

``RandomWorld`` builds several address spaces (one per PCID) in the shared
physical memory, each with:

- clustered 4 KiB user pages (locality: neighbouring pages share page tables),
  with random R/W, U/S, NX, A and D bits,
- 2 MiB and 1 GiB pages,
- global kernel pages (same virtual and physical address in every space, G=1),
- non-leaf entries whose A bit is clear (the walker must set it),
- garbage: entries with reserved bits set (M..51, XD without NXE, PS in a PML4E,
  misaligned huge-page frames), random values, non-present entries with junk.

It hands out virtual addresses with locality (a hot set), and performs the
kernel's page-table edits (mprotect, munmap, remap, A/D aging) with the
matching shootdown.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from model.x86.pgtable import PageTables
from model.x86.pte import PS, RW, US, XD, A, Access, D, Level, P, PageSize, addr_mask, canonical
from model.x86.tlbflush import CR3_NOFLUSH, CtlOp

KERNEL_BASE = 0xFFFF_8880_0000_0000


@dataclass
class Space:
    pcid: int
    pt: PageTables
    pages: list[tuple[int, PageSize]] = field(default_factory=list)  # (va, size) mapped leaves
    user_of: dict[int, bool] = field(default_factory=dict)  # va -> the leaf's U/S when mapped
    hot: list[tuple[int, PageSize]] = field(default_factory=list)  # the working set: most requests go here
    garbage: list[int] = field(default_factory=list)  # vas whose walk meets a garbage entry
    unmapped: list[int] = field(default_factory=list)


class RandomWorld:
    def __init__(self, env, rng: random.Random, *, spaces: int = 3, regions: int = 3, pages_per_region: int = 24,
                 huge_2m: int = 3, huge_1g: int = 1, kernel_pages: int = 8, garbage: int = 6,
                 pcide: bool = True) -> None:
        self.env = env
        self.rng = rng
        self.cfg = env.cfg
        self.M = env.cfg.maxphyaddr
        self.pcide = pcide
        self.spaces: list[Space] = []
        self.kernel_pages: list[int] = []
        self.current: Space | None = None
        kpa = [env.alloc_frame() for _ in range(kernel_pages)]
        for i in range(spaces):
            pcid = (i + 1) * 0x11 if pcide else 0
            sp = Space(pcid, env.new_tables())
            self.spaces.append(sp)
            # global kernel pages: identical in every space
            for j, pa in enumerate(kpa):
                va = KERNEL_BASE + j * 0x1000
                sp.pt.map(va, pa, writable=rng.random() < 0.7, user=False, nx=rng.random() < 0.3, global_=True,
                          accessed=rng.random() < 0.5, dirty=rng.random() < 0.5)
                if i == 0:
                    self.kernel_pages.append(va)
            for _ in range(regions):
                self._region(sp, pages_per_region)
            for _ in range(huge_2m):
                self._huge(sp, PageSize.SIZE_2M)
            for _ in range(huge_1g):
                self._huge(sp, PageSize.SIZE_1G)
            for _ in range(garbage):
                self._garbage(sp)
            for _ in range(4):
                sp.unmapped.append(self._fresh_va(PageSize.SIZE_4K))
            self._clear_nonleaf_a(sp, 0.3)

    # --- building -------------------------------------------------------------------

    def _fresh_va(self, size: PageSize, upper: bool = False) -> int:
        """A random canonical address, aligned to ``size``, in its own PML4 slot range."""
        rng = self.rng
        va = rng.getrandbits(47) & ~(size.bytes - 1)
        if upper or rng.random() < 0.15:
            va |= 1 << 47
        return canonical(va)

    def _flags(self):
        rng = self.rng
        return dict(writable=rng.random() < 0.75, user=rng.random() < 0.75, nx=rng.random() < 0.15,
                    accessed=rng.random() < 0.5, dirty=rng.random() < 0.3, global_=rng.random() < 0.05)

    def _region(self, sp: Space, n: int) -> None:
        base = self._fresh_va(PageSize.SIZE_4K) & ~0x3F_FFFF  # clustered, inside one or two PTs
        for k in range(n):
            va = base + k * 0x1000 + (0x1000 * self.rng.randrange(4) if k % 8 == 7 else 0)
            flags = self._flags()
            try:
                sp.pt.map(va, self.env.alloc_frame(), **flags)
            except Exception:  # noqa: BLE001 - a collision with another mapping: skip it
                continue
            sp.pages.append((va, PageSize.SIZE_4K))
            sp.user_of[va] = flags["user"]

    def _huge(self, sp: Space, size: PageSize) -> None:
        va = self._fresh_va(size)
        flags = self._flags()
        try:
            sp.pt.map(va, self.env.alloc_aligned(size.bytes), size, **flags)
        except Exception:  # noqa: BLE001
            return
        sp.pages.append((va, size))
        sp.user_of[va] = flags["user"]

    def garbage_value(self, level: Level) -> int:
        rng = self.rng
        M = self.M
        kind = rng.randrange(7)
        base = (rng.getrandbits(M) & ~0xFFF) | P | (rng.getrandbits(9) & ~PS & 0x1FF)
        if kind == 0 and M < 52:  # a reserved physical-address bit M..51
            return base | (1 << rng.randrange(M, 52)) | (rng.getrandbits(1) * PS)
        if kind == 1:  # XD: reserved only with NXE=0
            return base | XD
        if kind == 2:  # PS in a PML4E (reserved), else a huge leaf with misaligned frame
            v = base | PS | (1 << rng.randrange(13, 30 if level == Level.PDPT else 21))
            return v
        if kind == 3:  # not present, junk elsewhere
            return rng.getrandbits(64) & ~P
        if kind == 4:  # a fully random value
            return rng.getrandbits(64)
        if kind == 5:  # valid-looking, pointing at a random (zero) table: faults one level down
            return (rng.getrandbits(M - 12) << 12) | P | RW | US
        return base | (rng.getrandbits(11) << 52)  # ignored bits 52..62 only: legal

    def _garbage(self, sp: Space) -> None:
        va = self._fresh_va(PageSize.SIZE_4K)
        level = self.rng.choice([Level.PML4, Level.PDPT, Level.PD, Level.PT])
        try:
            sp.pt.set_entry(va, level, self.garbage_value(level))
        except Exception:  # noqa: BLE001
            return
        sp.garbage.append(va)

    def _clear_nonleaf_a(self, sp: Space, prob: float) -> None:
        """Clear A in some non-leaf entries on the way to mapped pages, so the walker must set them."""
        for va, size in sp.pages:
            for level in (Level.PML4, Level.PDPT, Level.PD):
                if level.value <= size.leaf_level.value:
                    break
                if self.rng.random() < prob:
                    addr = sp.pt.entry_addr(va, level)
                    if addr is not None:
                        v = self.env.mem.read64(addr)
                        if v & P and not (level != Level.PML4 and v & PS):
                            self.env.mem.write64(addr, v & ~A)

    # --- addresses --------------------------------------------------------------------

    def cr3_of(self, sp: Space) -> int:
        if self.pcide:
            return sp.pt.pml4 | sp.pcid
        return sp.pt.pml4 | (self.rng.choice((0, 0x8, 0x10, 0x18)))  # PWT/PCD: no PCID without PCIDE

    def random_va(self, sp: Space) -> int:
        return self.random_request(sp)[0]

    def random_request(self, sp: Space) -> tuple[int, Access, bool]:
        """A virtual address with locality, an access kind, and user/supervisor (mostly the page's own)."""
        rng = self.rng
        r = rng.random()
        a = rng.random()
        access = Access.READ if a < 0.55 else Access.WRITE if a < 0.8 else Access.FETCH
        user = rng.random() < 0.5
        if r < 0.015:  # non-canonical
            va = ((rng.getrandbits(16) | 1) << 48 | rng.getrandbits(47)) if rng.random() < 0.5 else \
                (1 << 47) | rng.getrandbits(47)
            return va, access, user
        if r < 0.05 and sp.garbage:
            return rng.choice(sp.garbage) + rng.randrange(0, 0x1000, 8), access, user
        if r < 0.07 and sp.unmapped:
            return rng.choice(sp.unmapped) + rng.randrange(0x1000), access, user
        if r < 0.12 or not sp.pages:
            return rng.choice(self.kernel_pages) + rng.randrange(0x1000), access, rng.random() < 0.1
        if sp.hot and r < 0.85:
            va, size = rng.choice(sp.hot)
        else:
            va, size = rng.choice(sp.pages)
            if rng.random() < 0.3:
                sp.hot.append((va, size))
                if len(sp.hot) > 16:
                    sp.hot.pop(rng.randrange(len(sp.hot)))
        if rng.random() < 0.85:
            user = sp.user_of.get(va, user)
        if size == PageSize.SIZE_4K:
            return va + rng.randrange(0x1000), access, user
        # a huge page: often a few distinct 4 KiB slices (set-index bits differ)
        return va + (rng.randrange(min(size.bytes >> 12, 64)) << 12) + rng.randrange(0x1000), access, user

    def random_ctl(self, sp: Space) -> tuple[CtlOp, int]:
        rng = self.rng
        op = rng.choice([CtlOp.FLUSH_VA, CtlOp.FLUSH_VA, CtlOp.FLUSH_PCID, CtlOp.FLUSH_ALL,
                         CtlOp.FLUSH_ALL_KEEP_GLOBAL, CtlOp.WRITE_CR3, CtlOp.WRITE_CR3])
        if op == CtlOp.FLUSH_VA:
            return op, self.random_va(sp) & ((1 << 64) - 1)
        if op == CtlOp.FLUSH_PCID:
            return op, rng.choice(self.spaces).pcid
        if op == CtlOp.WRITE_CR3:
            target = rng.choice(self.spaces)
            value = self.cr3_of(target)
            if self.pcide and rng.random() < 0.5:
                value |= CR3_NOFLUSH
            self.current = target
            return op, value
        return op, 0

    # --- kernel edits (call only while the MMU is idle) -----------------------------------

    def kernel_edit(self, sp: Space) -> list[tuple[CtlOp, int]]:
        """One random page-table change in ``sp``; returns the shootdown to send."""
        rng = self.rng
        env = self.env
        env.kernel_edit_ok()
        if not sp.pages:
            return []
        va, size = rng.choice(sp.pages)
        kind = rng.randrange(6)
        pt = sp.pt
        leaf = pt.lookup(va)
        if leaf is None:
            return []
        addr, old = leaf.entry_addr, leaf.value
        if kind == 0:  # mprotect
            pt.protect(va, writable=rng.random() < 0.5, user=rng.random() < 0.7, nx=rng.random() < 0.3)
        elif kind == 1:  # ptep_test_and_clear_young (LRU aging)
            env.mem.write64(addr, old & ~A)
        elif kind == 2:  # writeback cleans the page
            env.mem.write64(addr, old & ~D)
        elif kind == 3:  # munmap
            pt.unmap(va)
            sp.pages.remove((va, size))
            sp.unmapped.append(va)
        elif kind == 4:  # remap to another frame
            new_pa = env.alloc_frame() if size == PageSize.SIZE_4K else env.alloc_aligned(size.bytes)
            env.mem.write64(addr, (old & ~addr_mask(self.M)) | new_pa)
        else:  # clear A on a non-leaf entry above it
            lvl = rng.choice([lv for lv in (Level.PML4, Level.PDPT, Level.PD) if lv.value > size.leaf_level.value])
            a = pt.entry_addr(va, lvl)
            if a is not None:
                env.mem.write64(a, env.mem.read64(a) & ~A)
        if leaf.global_:
            return [(CtlOp.FLUSH_ALL, 0)]
        if sp is not self.current:
            return [(CtlOp.FLUSH_PCID, sp.pcid)] if self.pcide else [(CtlOp.FLUSH_ALL_KEEP_GLOBAL, 0)]
        return [(CtlOp.FLUSH_VA, va)]
