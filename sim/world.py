"""Random page tables and random request/flush/CR3 streams for the co-simulation regressions.

Everything draws from one ``random.Random`` given by the caller (seeded from the
test's SEED), so a run replays exactly.

``RandomWorld`` builds several address spaces (one per PCID) in the shared
physical memory, each with:

- clustered 4 KiB user pages (locality: neighbouring pages share page tables),
  with random R/W, U/S, NX, A and D bits, and 2 MiB and 1 GiB pages;
- upper-level entries that restrict rights above valid leaves: R/W = 0, U/S = 0
  or XD = 1 in the PML4E, PDPTE or PDE over some regions and huge pages (the
  combined rights, not the leaf's, decide);
- shared addresses: the same virtual page of each size mapped, non-global, in
  every space to a different frame (what a flush of one PCID must leave alone in
  the others);
- global kernel pages of every size (same virtual and physical address in every
  space, G=1);
- reserved bits of each kind at each level where they exist (M..51 and XD
  without NXE at every level, PS in a PML4E, frame bits 20:13 of a 2 MiB leaf,
  29:13 of a 1 GiB leaf), each range by its lowest bit, its highest and one
  between, plus random garbage;
- non-leaf entries whose A bit is clear (the walker must set it).

Besides single requests and control operations it hands out *episodes*: short
sequences of steps built to expose one bug class (``episode``): a flush followed
by re-touching both what it dropped and what must survive it (so an over-flush
or an under-flush shows as a hit/miss mismatch); a PCID round trip through
another space with shared and global pages; a flush timed to land in the lookup
cycle or a walker state of a missing request; a clean page read and then
written (the write must re-walk to set D), per page size; an access its TLB
entry does not allow; a sweep over every page (replacement in every set).  Steps are plain tuples (``REQ``, ``CTL``, ``CYCLES``,
``ACCEPTED``, ``MEMOPS``, ``IDLE``, ``FLAGS``, ``EDIT``) that sim/cocotb_tests/mmu_random.py executes.

Kernel edits (mprotect, munmap, remap, A/D aging) come with the matching shootdown.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from model.x86.pgtable import PageTableError, PageTables
from model.x86.pte import PS, RW, US, XD, A, Access, D, Level, P, PageSize, addr_mask, canonical
from model.x86.tlbflush import CR3_NOFLUSH, CtlOp

KERNEL_BASE = 0xFFFF_8880_0000_0000  # 4 KiB globals here, a global 2 MiB page 1 GiB above, a 1 GiB one above that
HUGE = (PageSize.SIZE_2M, PageSize.SIZE_1G)
UPPER = {PageSize.SIZE_4K: (Level.PML4, Level.PDPT, Level.PD), PageSize.SIZE_2M: (Level.PML4, Level.PDPT),
         PageSize.SIZE_1G: (Level.PML4,)}
# reserved-bit kinds and the levels where each exists (model/x86/pte.py: reserved_mask)
RESERVED_KINDS = (("high", (Level.PML4, Level.PDPT, Level.PD, Level.PT)),
                  ("xd", (Level.PML4, Level.PDPT, Level.PD, Level.PT)),
                  ("ps", (Level.PML4,)), ("frame2m", (Level.PD,)), ("frame1g", (Level.PDPT,)))

# episode steps
REQ = "req"  # (REQ, vaddr, access, user)
CTL = "ctl"  # (CTL, op, value)
CYCLES = "cycles"  # (CYCLES, n): let about n cycles pass
ACCEPTED = "accepted"  # (ACCEPTED,): until the last request is accepted
MEMOPS = "memops"  # (MEMOPS, k): until k memory transactions since the last request (or its answer)
IDLE = "idle"  # (IDLE,): until nothing is queued or in flight
FLAGS = "flags"  # (FLAGS, {flag: value}): while idle, change CR0.WP, EFER.NXE, CR4.SMEP/SMAP/PCIDE
EDIT = "edit"  # (EDIT, fn): while idle, fn() edits page tables and returns the shootdown [(op, value)]


@dataclass
class Space:
    pcid: int
    pt: PageTables
    pages: list[tuple[int, PageSize]] = field(default_factory=list)  # (va, size) mapped leaves
    user_of: dict[int, bool] = field(default_factory=dict)  # va -> the leaf's U/S when mapped
    hot: list[tuple[int, PageSize]] = field(default_factory=list)  # the working set: most requests go here
    recent: deque = field(default_factory=lambda: deque(maxlen=12))  # (va, access, user) last touched
    garbage: list[int] = field(default_factory=list)  # vas whose walk meets a garbage entry
    unmapped: list[int] = field(default_factory=list)


class RandomWorld:
    def __init__(self, env, rng: random.Random, *, spaces: int = 3, regions: int = 3, pages_per_region: int = 24,
                 huge_2m: int = 3, huge_1g: int = 1, kernel_pages: int = 8, garbage: int = 6,
                 pcide: bool = True, p_restrict: float = 0.12) -> None:
        self.env = env
        self.rng = rng
        self.cfg = env.cfg
        self.M = env.cfg.maxphyaddr
        self.pcide = pcide
        self.spaces: list[Space] = []
        self.current: Space | None = None
        # global kernel pages: identical (address, frame, rights) in every space
        kernel = [(KERNEL_BASE + j * 0x1000, PageSize.SIZE_4K, env.alloc_frame()) for j in range(kernel_pages)]
        kernel += [(KERNEL_BASE + (i + 1 << 30), size, env.alloc_aligned(size.bytes)) for i, size in enumerate(HUGE)]
        kernel_flags = [dict(writable=rng.random() < 0.7, user=False, nx=rng.random() < 0.3, global_=True,
                             accessed=rng.random() < 0.5, dirty=rng.random() < 0.5) for _ in kernel]
        self.kernel_pages = [(va, size) for va, size, _ in kernel]
        self.shared = [(self._fresh_va(size), size) for size in PageSize]
        for i in range(spaces):
            pcid = (i + 1) * 0x11 if pcide else 0
            sp = Space(pcid, env.new_tables())
            self.spaces.append(sp)
            for (va, size, pa), flags in zip(kernel, kernel_flags):
                sp.pt.map(va, pa, size, **flags)
            for va, size in self.shared:
                self._map(sp, va, self._frame(size), size, self._flags(global_=False))
            for _ in range(regions):
                self._region(sp, pages_per_region)
            for size, n in ((PageSize.SIZE_2M, huge_2m), (PageSize.SIZE_1G, huge_1g)):
                for _ in range(n):
                    self._map(sp, self._fresh_va(size), self._frame(size), size, self._flags())
            for kind, levels in RESERVED_KINDS:
                for level in levels:
                    for edge in (("low", "high", "any") if kind in ("high", "frame2m", "frame1g") else ("any",)):
                        self._garbage(sp, level, self.reserved_value(kind, level, edge))
            for _ in range(garbage):
                level = rng.choice(list(Level))
                self._garbage(sp, level, self.garbage_value(level))
            for _ in range(4):
                sp.unmapped.append(self._fresh_va(PageSize.SIZE_4K))
            self._restrict_upper(sp, p_restrict)
            self._clear_nonleaf_a(sp, 0.3)

    # --- building -------------------------------------------------------------------

    def _fresh_va(self, size: PageSize, upper: bool = False) -> int:
        """A random canonical address, aligned to ``size``, in its own PML4 slot range."""
        rng = self.rng
        va = rng.getrandbits(47) & ~(size.bytes - 1)
        if upper or rng.random() < 0.15:
            va |= 1 << 47
        return canonical(va)

    def _frame(self, size: PageSize) -> int:
        return self.env.alloc_frame() if size == PageSize.SIZE_4K else self.env.alloc_aligned(size.bytes)

    def _flags(self, **fixed):
        rng = self.rng
        flags = dict(writable=rng.random() < 0.75, user=rng.random() < 0.75, nx=rng.random() < 0.15,
                     accessed=rng.random() < 0.5, dirty=rng.random() < 0.3, global_=rng.random() < 0.05)
        return {**flags, **fixed}

    def _map(self, sp: Space, va: int, pa: int, size: PageSize, flags: dict) -> None:
        try:
            sp.pt.map(va, pa, size, **flags)
        except PageTableError:  # a collision with another mapping: skip it
            return
        sp.pages.append((va, size))
        sp.user_of[va] = flags["user"]

    def _region(self, sp: Space, n: int) -> None:
        base = self._fresh_va(PageSize.SIZE_4K) & ~0x3F_FFFF  # clustered, inside one or two PTs
        for k in range(n):
            va = base + k * 0x1000 + (0x1000 * self.rng.randrange(4) if k % 8 == 7 else 0)
            self._map(sp, va, self.env.alloc_frame(), PageSize.SIZE_4K, self._flags())

    def reserved_value(self, kind: str, level: Level, edge: str = "any") -> int:
        """A present entry at ``level`` whose only reserved bits are of ``kind``: its lowest reserved bit
        (``edge="low"``), its highest (``"high"``) or any."""
        rng = self.rng
        M = self.M
        base = (rng.getrandbits(M - 12) << 12) | P | RW | US | (rng.getrandbits(1) * A)
        huge = kind in ("frame2m", "frame1g") or (kind == "high" and level in (Level.PDPT, Level.PD)
                                                   and rng.random() < 0.5)
        if huge:  # a huge leaf: its frame is aligned unless this entry is about misalignment
            top = 20 if level == Level.PD else 29
            base = (base & ~((1 << (top + 1)) - 1)) | (base & 0xFFF) | PS
        if kind == "high":  # a physical-address bit M..51
            return base | (1 << {"low": M, "high": 51}.get(edge, rng.randrange(M, 52)))
        if kind == "xd":  # XD: reserved only with NXE=0 (a legal entry otherwise)
            return base | XD
        if kind == "ps":  # PS in a PML4E
            return base | PS
        # frame bits below the alignment (bit 12 is PAT)
        return base | (1 << {"low": 13, "high": top}.get(edge, rng.randrange(13, top + 1)))

    def garbage_value(self, level: Level) -> int:
        rng = self.rng
        M = self.M
        kind = rng.randrange(4)
        if kind == 0:  # not present, junk elsewhere
            return rng.getrandbits(64) & ~P
        if kind == 1:  # a fully random value
            return rng.getrandbits(64)
        if kind == 2:  # valid-looking, pointing at a random (zero) table: faults one level down
            return (rng.getrandbits(M - 12) << 12) | P | RW | US
        base = (rng.getrandbits(M) & ~0xFFF) | P | (rng.getrandbits(9) & ~PS & 0x1FF)
        return base | (rng.getrandbits(11) << 52)  # ignored bits 52..62 only: legal

    def _garbage(self, sp: Space, level: Level, value: int) -> None:
        """Put ``value`` at ``level`` on the walk of a fresh address (never over a live entry)."""
        for _ in range(8):
            va = self._fresh_va(PageSize.SIZE_4K)
            try:
                if sp.pt.get_entry(va, level) == 0:
                    sp.pt.set_entry(va, level, value)
                    sp.garbage.append(va)
                    return
            except PageTableError:  # a huge leaf above this level
                continue

    def _restrict_upper(self, sp: Space, prob: float) -> None:
        """R/W = 0, U/S = 0 or XD = 1 in some entries above leaves (each distinct entry with ``prob``):
        the whole subtree below loses that right."""
        rng = self.rng
        entries = {sp.pt.entry_addr(va, level) for va, size in sp.pages for level in UPPER[size]}
        for addr in sorted(a for a in entries if a is not None):
            if rng.random() < prob:
                v = self.env.mem.read64(addr)
                self.env.mem.write64(addr, rng.choice((v & ~RW, v & ~US, v | XD)))

    def _clear_nonleaf_a(self, sp: Space, prob: float) -> None:
        """Clear A in some non-leaf entries on the way to mapped pages, so the walker must set them."""
        for va, size in sp.pages:
            for level in UPPER[size]:
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

    def _offset(self, size: PageSize) -> int:
        """An offset into a page: anywhere in it half of the time, else one of its first 64 4 KiB slices."""
        rng = self.rng
        if size != PageSize.SIZE_4K and rng.random() < 0.5:
            return rng.randrange(size.bytes)
        return (rng.randrange(min(size.bytes >> 12, 64)) << 12) + rng.randrange(0x1000)

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
        if r < 0.06 and sp.garbage:
            return rng.choice(sp.garbage) + rng.randrange(0, 0x1000, 8), access, user
        if r < 0.08 and sp.unmapped:
            return rng.choice(sp.unmapped) + rng.randrange(0x1000), access, user
        if r < 0.14 or not sp.pages:
            va, size = rng.choice(self.kernel_pages)
            return self._touch(sp, va + self._offset(size), access, rng.random() < 0.1)
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
        return self._touch(sp, va + self._offset(size), access, user)

    @staticmethod
    def _touch(sp: Space, va: int, access: Access, user: bool) -> tuple[int, Access, bool]:
        sp.recent.append((va, access, user))
        return va, access, user

    def random_ctl(self, sp: Space) -> tuple[CtlOp, int]:
        rng = self.rng
        op = rng.choice([CtlOp.FLUSH_VA, CtlOp.FLUSH_VA, CtlOp.FLUSH_PCID, CtlOp.FLUSH_ALL,
                         CtlOp.FLUSH_ALL_KEEP_GLOBAL, CtlOp.WRITE_CR3, CtlOp.WRITE_CR3])
        if op == CtlOp.FLUSH_VA:
            if sp.recent and rng.random() < 0.6:
                return op, rng.choice(sp.recent)[0] & ((1 << 64) - 1)
            return op, self.random_va(sp) & ((1 << 64) - 1)
        if op == CtlOp.FLUSH_PCID:
            return op, rng.choice(self.spaces).pcid
        if op == CtlOp.WRITE_CR3:
            return self.switch(rng.choice(self.spaces), rng.random() < 0.5)
        return op, 0

    def switch(self, target: Space, noflush: bool) -> tuple[CtlOp, int]:
        """A CR3 write to ``target``; the no-flush bit is sent with or without PCIDE (ignored without)."""
        self.current = target
        return CtlOp.WRITE_CR3, self.cr3_of(target) | (CR3_NOFLUSH if noflush else 0)

    # --- episodes ---------------------------------------------------------------------------

    def episode(self) -> list[tuple]:
        """One short sequence of steps aimed at one bug class (see the module docstring)."""
        rng = self.rng
        kind = rng.choices(("flush", "pcid", "pcide", "timed", "clean", "blocked", "sweep", "reserved"),
                           (4, 3, 1 if self.pcide else 0, 5, 2, 2, 1, 1))[0]
        return getattr(self, f"_episode_{kind}")()

    def _probes(self, sp: Space, extra: int = 0) -> list[tuple]:
        """Re-touch what ``sp`` used lately, its shared pages and the global pages of every size, plus
        neighbours of recent pages (TLB misses whose walks start from the page-walk cache)."""
        rng = self.rng
        steps = [(REQ, va, access, user) for va, access, user in list(sp.recent)[-4 - extra:]]
        for va, size in rng.sample(self.shared, 2) + rng.sample(self.kernel_pages, 2):
            steps.append((REQ, va + self._offset(size), Access.READ, False))
        if sp.recent:
            va = rng.choice(sp.recent)[0]
            steps.append((REQ, va ^ (rng.randrange(1, 8) << 12), Access.READ, sp.user_of.get(va, False)))
        return steps

    def _page(self, sp: Space) -> tuple[int, PageSize, bool]:
        """A page of ``sp`` or a kernel page, its size drawn first (so 1 GiB pages get as much attention as
        4 KiB ones), with an address in it and the leaf's U/S."""
        rng = self.rng
        pages = sp.pages + self.kernel_pages
        size = rng.choice(sorted({s for _, s in pages}))
        va = rng.choice([v for v, s in pages if s == size])
        return va + self._offset(size), size, sp.user_of.get(va, False)

    def _episode_flush(self) -> list[tuple]:
        """Touch a page, flush (by VA: that page), re-touch it and what must have survived."""
        sp = self.current
        va, size, user = self._page(sp)
        steps = [(REQ, va, Access.READ, user)] + self._probes(sp)
        op, value = (CtlOp.FLUSH_VA, va) if self.rng.random() < 0.5 else self.random_ctl(sp)
        steps += [(CTL, op, value), (REQ, va ^ self.rng.randrange(0x1000), Access.READ, user)]
        return steps + self._probes(self.current, extra=4)

    def _episode_pcide(self) -> list[tuple]:
        """PCIDE off, a CR3 write (it drops every non-global entry, other PCIDs' too), PCIDE on, back to the
        same space without flushing: what was dropped must miss."""
        sp = self.current
        return (self._probes(sp) + [(FLAGS, {"pcide": False}), (CTL, *self.switch(sp, self.rng.random() < 0.5)),
                                    (FLAGS, {"pcide": True}), (CTL, *self.switch(sp, True))] + self._probes(sp, 6))

    def _episode_reserved(self) -> list[tuple]:
        """Every garbage entry of the current space once, with NXE off half of the time (XD is reserved)."""
        rng = self.rng
        sp = self.current
        steps = [(FLAGS, {"nxe": rng.random() < 0.5})]
        for va in rng.sample(sp.garbage, len(sp.garbage)):
            steps.append((REQ, va + rng.randrange(0, 0x1000, 8), rng.choice(list(Access)), rng.random() < 0.5))
        return steps

    def _episode_pcid(self) -> list[tuple]:
        """Fill shared and global entries in A, flush in B, come back to A: what A owns must still hit (with
        PCIDE=0 the no-flush bit is ignored: every switch flushes, and A's entries must miss)."""
        rng = self.rng
        a = self.current
        b = rng.choice([s for s in self.spaces if s is not a] or [a])
        va, size = rng.choice(self.shared if rng.random() < 0.7 else self.kernel_pages)
        va += self._offset(size)
        touch = (REQ, va, Access.READ, False)
        steps = [touch] + self._probes(a) + [(CTL, *self.switch(b, rng.random() < 0.7)), touch] + self._probes(b)
        op = rng.choice((CtlOp.FLUSH_VA, CtlOp.FLUSH_VA, CtlOp.FLUSH_PCID, CtlOp.FLUSH_ALL,
                         CtlOp.FLUSH_ALL_KEEP_GLOBAL, CtlOp.WRITE_CR3))
        if op == CtlOp.FLUSH_VA:
            steps += [(CTL, op, va), touch]
        elif op == CtlOp.FLUSH_PCID:
            steps.append((CTL, op, rng.choice((a, b)).pcid))
        elif op == CtlOp.WRITE_CR3:
            steps.append((CTL, *self.switch(b, False)))
        else:
            steps.append((CTL, op, 0))
        steps += self._probes(b)
        return steps + [(CTL, *self.switch(a, True)), touch] + self._probes(a, extra=6)

    def _episode_timed(self) -> list[tuple]:
        """Requests each followed by a control operation placed in its lookup cycle (a recent page: a hit;
        an aged one: a miss), after the k-th memory transaction of its walk (READ, WAIT, A/D write, DONE)
        or some cycles later; then the same page again (a stale fill shows as a wrong hit)."""
        rng = self.rng
        sp = self.current
        t = self.cfg.dram
        level = (t.latency if t.kind == "fixed" else t.tRCD + t.tCL) + 1  # about the cycles of one level's read
        steps = []
        for _ in range(3):
            va, size, user = self._page(sp)
            access = rng.choice((Access.READ, Access.WRITE, Access.WRITE, Access.FETCH))
            if rng.random() < 0.3:
                op, value = CtlOp.FLUSH_VA, (va if rng.random() < 0.5 else rng.choice(sp.recent or [(va,)])[0])
            else:
                op, value = self.random_ctl(sp)
            when = rng.random()
            if when < 0.25 and sp.recent:  # the lookup cycle of a probable hit
                va, access, user = rng.choice(sp.recent)
                wait = [(CYCLES, 0)]
            else:
                steps.append((EDIT, lambda va=va, sp=sp: self._age(sp, va)))
                wait = [(CYCLES, rng.randint(0, 4 * level + 4))] if when < 0.5 else \
                    [(MEMOPS, rng.randint(1, 6)), (CYCLES, rng.randint(0, level + 1))]
            steps += [(IDLE,), (REQ, va, access, user), (ACCEPTED,), *wait, (CTL, op, value), (REQ, va, access, user)]
            sp = self.current
        return steps + self._probes(self.current)

    def _age(self, sp: Space, va: int) -> list[tuple[CtlOp, int]]:
        """Clear A (and often D) of the leaf of ``va``, with its shootdown: the next access misses and its
        walk ends with A/D writes."""
        self.env.kernel_edit_ok()
        leaf = sp.pt.lookup(va)
        if leaf is None:
            return []
        self.env.mem.write64(leaf.entry_addr, leaf.value & ~(A | (D if self.rng.random() < 0.6 else 0)))
        for level in UPPER[leaf.size]:  # often the entries above too: several A/D writes in a row
            addr = sp.pt.entry_addr(va, level)
            if addr is not None and self.rng.random() < 0.5:
                self.env.mem.write64(addr, self.env.mem.read64(addr) & ~A)
        return self._shootdown(sp, va, leaf.global_)

    def _episode_clean(self) -> list[tuple]:
        """Clear D (with its shootdown), read, then write: the write must re-walk to set D; per size."""
        rng = self.rng
        sp = self.current
        by_size = {}
        for va, size in sp.pages + self.kernel_pages:
            by_size.setdefault(size, []).append(va)
        size = rng.choice(list(by_size))
        va = rng.choice(by_size[size])
        user = sp.user_of.get(va, False)
        off = self._offset(size)
        return [(EDIT, lambda: self._clean(sp, va)), (REQ, va + off, Access.READ, user),
                (REQ, va + self._offset(size), Access.WRITE, user), (REQ, va + off, Access.WRITE, user)]

    def _clean(self, sp: Space, va: int) -> list[tuple[CtlOp, int]]:
        self.env.kernel_edit_ok()
        leaf = sp.pt.lookup(va)
        if leaf is None:
            return []
        self.env.mem.write64(leaf.entry_addr, leaf.value & ~D)
        return self._shootdown(sp, va, leaf.global_)

    def _episode_blocked(self) -> list[tuple]:
        """Fill an entry with an allowed read, then an access it may not allow (write, fetch, user)."""
        rng = self.rng
        sp = self.current
        va, size = rng.choice(sp.pages + self.kernel_pages)
        va += self._offset(size)
        user = sp.user_of.get(va & ~(size.bytes - 1), False)
        return [(REQ, va, Access.READ, user), (REQ, va, rng.choice((Access.WRITE, Access.FETCH)), rng.random() < 0.5),
                (REQ, va, Access.READ, user)]

    def _episode_sweep(self) -> list[tuple]:
        """Every page of the current space once, in random order, all reads or all fetches: each set of
        the TLB that serves them overflows, so replacement picks victims."""
        rng = self.rng
        sp = self.current
        access = rng.choice((Access.READ, Access.FETCH))
        pages = sp.pages + self.kernel_pages
        return [(REQ, va + self._offset(size), access, sp.user_of.get(va, False))
                for va, size in rng.sample(pages, len(pages))]

    # --- kernel edits (call only while the MMU is idle) -----------------------------------

    def _shootdown(self, sp: Space, va: int, global_: bool) -> list[tuple[CtlOp, int]]:
        if global_:
            return [(CtlOp.FLUSH_ALL, 0)]
        if sp is not self.current:
            return [(CtlOp.FLUSH_PCID, sp.pcid)] if self.pcide else [(CtlOp.FLUSH_ALL_KEEP_GLOBAL, 0)]
        return [(CtlOp.FLUSH_VA, va)]

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
            env.mem.write64(addr, (old & ~addr_mask(self.M)) | self._frame(size))
        else:  # clear A on a non-leaf entry above it
            a = pt.entry_addr(va, rng.choice(UPPER[size]))
            if a is not None:
                env.mem.write64(a, env.mem.read64(a) & ~A)
        return self._shootdown(sp, va, leaf.global_)
