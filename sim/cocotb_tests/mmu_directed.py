"""Directed co-simulation tests of the MMU top (cocotb, run by sim/regression.py).

Every response is checked by the scoreboard against the reference MMU (paddr or
fault and error code, page size, TLB hit/miss, id, walk reads, A/D writes), and
the counters at the end.  The ``expect`` calls below additionally pin what each
test is about, so that a test cannot pass by not exercising its subject (and a
bug shared by the hardware and the reference still shows up).
"""

from __future__ import annotations

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
    Level,
    P,
    PageSize,
)
from model.x86.tlbflush import CtlOp
from sim.cosim import CosimEnv, cosim_test

R, W, X = Access.READ, Access.WRITE, Access.FETCH
SIZES = (PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G)


def expect(resp, *, hit=None, fault=None, paddr=None, code=None, size=None, what=""):
    tag = f" ({what})" if what else ""
    if fault is not None:
        assert resp.fault == int(fault), f"expected fault {FaultKind(fault).name}, got {resp}{tag}"
    if hit is not None:
        assert resp.tlb_hit == hit, f"expected tlb_{'hit' if hit else 'miss'}, got {resp}{tag}"
    if paddr is not None:
        assert resp.fault == 0 and resp.paddr == paddr, f"expected paddr {paddr:#x}, got {resp}{tag}"
    if code is not None:
        assert resp.fault == FaultKind.PAGE and resp.error_code == code, \
            f"expected #PF error code {code:#x}, got {resp}{tag}"
    if size is not None:
        assert resp.fault == 0 and resp.size == int(size), f"expected size {PageSize(size).label}, got {resp}{tag}"


async def boot(env: CosimEnv, pcid: int = 0, **flags):
    """A fresh address space loaded into CR3 (and flags applied)."""
    if flags:
        await env.set_flags(**flags)
    pt = env.new_tables()
    await env.write_cr3(pt.pml4 | pcid)
    return pt


def frame_for(env: CosimEnv, size: PageSize) -> int:
    return env.alloc_frame() if size == PageSize.SIZE_4K else env.alloc_aligned(size.bytes)


def clear_nonleaf_a(env: CosimEnv, pt, va: int, size: PageSize = PageSize.SIZE_4K) -> None:
    for level in (Level.PML4, Level.PDPT, Level.PD):
        if level.value > size.leaf_level.value:
            a = pt.entry_addr(va, level)
            env.mem.write64(a, env.mem.read64(a) & ~A)


def error_code(access: Access, user: bool, *, present: bool, rsvd: bool = False, nxe=True, smep=False) -> int:
    code = (PF_P if present or rsvd else 0) | (PF_RSVD if rsvd else 0)
    code |= PF_WR if access == W else 0
    code |= PF_US if user else 0
    code |= PF_ID if access == X and (nxe or smep) else 0
    return code


# ---------------------------------------------------------------------------


@cosim_test()
async def hit_miss(env: CosimEnv):
    """A miss walks four levels, the same page then hits; a neighbour walks from the PWC."""
    pt = await boot(env)
    pa, pa2 = env.alloc_frame(), env.alloc_frame()
    pt.map(0x4000_0000, pa, accessed=True, dirty=True)
    pt.map(0x4000_1000, pa2, accessed=True, dirty=True)
    expect(await env.translate(0x4000_0123), hit=False, paddr=pa + 0x123, size=PageSize.SIZE_4K)
    expect(await env.translate(0x4000_0FF8), hit=True, paddr=pa + 0xFF8)
    expect(await env.translate(0x4000_0000, W), hit=True, paddr=pa)
    n = len(env.tb.store.reads)
    expect(await env.translate(0x4000_1008), hit=False, paddr=pa2 + 8)
    if env.cfg.pwc_entries:
        assert len(env.tb.store.reads) - n == 1, "a neighbour page should walk from the PWC (one read)"
    else:
        assert len(env.tb.store.reads) - n == 4
    expect(await env.translate(0x4000_1000, X), hit=False, paddr=pa2, what="fetch looks up the ITLB")
    expect(await env.translate(0x4000_1010, X), hit=True, paddr=pa2 + 0x10)


@cosim_test()
async def back_to_back(env: CosimEnv):
    """Requests queued back to back (ids wrap around): answered in order, every id echoed."""
    pt = await boot(env)
    vas = []
    for i in range(24):
        va = 0x7F00_0000_0000 + i * 0x1000 + (i // 8) * 0x20_0000_0000
        pt.map(va, env.alloc_frame(), accessed=True, dirty=True)
        vas.append(va)
    reqs = []
    for rep in range(12):
        for i, va in enumerate(vas):
            reqs.append(env.tb.submit(va + rep * 8, (R, W, X)[(i + rep) % 3]))
    for r in reqs:
        await env.tb.wait_response(r)
    assert env.tb.req.accepted == len(reqs)


@cosim_test()
async def page_sizes(env: CosimEnv):
    """4 KiB, 2 MiB and 1 GiB leaves, lower and upper half, offsets at both ends."""
    pt = await boot(env)
    cases = []
    for size, va in ((PageSize.SIZE_4K, 0x1234_5678_9000), (PageSize.SIZE_2M, 0x2000_0040_0000),
                     (PageSize.SIZE_1G, 0x3000_4000_0000), (PageSize.SIZE_4K, 0xFFFF_8000_0000_1000),
                     (PageSize.SIZE_2M, 0xFFFF_C000_0020_0000), (PageSize.SIZE_1G, 0xFFFF_FFFF_C000_0000)):
        pa = frame_for(env, size)
        pt.map(va, pa, size, accessed=True, dirty=True)
        cases.append((size, va, pa))
    for size, va, pa in cases:
        for off in (0, 8, size.bytes - 1, size.bytes // 2 + 0x123):
            expect(await env.translate(va + off), fault=FaultKind.NONE, paddr=pa + off, size=size)
    for size, va, pa in cases:
        expect(await env.translate(va + size.bytes - 0x1000, W), hit=True, size=size)
    # every access kind in both modes on every page size: a miss (after INVLPG) and then a hit
    for size, va, pa in cases:
        for access in (R, W, X):
            for user in (False, True):
                await env.tb.control(CtlOp.FLUSH_VA, va)
                expect(await env.translate(va + 0x40, access, user), hit=False, paddr=pa + 0x40, size=size)
                expect(await env.translate(va + 0x80, access, user), hit=True, paddr=pa + 0x80, size=size)


@cosim_test()
async def not_present_each_level(env: CosimEnv):
    """P=0 at PML4E, PDPTE, PDE, PTE, for every access kind, user and supervisor."""
    pt = await boot(env)
    base = 0x0000_5000_0000_0000
    for i, level in enumerate((Level.PML4, Level.PDPT, Level.PD, Level.PT)):
        va = base + i * (1 << 39)
        pt.map(va, env.alloc_frame(), accessed=True, dirty=True)
        pt.set_entry(va, level, 0xDEAD_BEEF_0000_0000 & ~P if level != Level.PT else 0)
        for access in (R, W, X):
            for user in (False, True):
                resp = await env.translate(va + 0x10, access, user)
                expect(resp, hit=False, code=error_code(access, user, present=False),
                       what=f"{level.name} not present")
    # nothing was filled: the same requests miss again
    expect(await env.translate(base, R), hit=False, fault=FaultKind.PAGE)


@cosim_test()
async def protection_each_level(env: CosimEnv):
    """R/W=0, U/S=0 and XD at each level (leaf and non-leaf), with WP on and off."""
    pt = await boot(env)
    base = 0x0000_6000_0000_0000
    n = 0
    for bit, name in ((RW, "R/W=0"), (US, "U/S=0"), (XD, "XD")):
        for size in SIZES:
            for level in (Level.PML4, Level.PDPT, Level.PD, Level.PT):
                if level.value < size.leaf_level.value:
                    continue
                va = base + n * (1 << 39)
                n += 1
                pt.map(va, frame_for(env, size), size, user=True, writable=True, accessed=True, dirty=True)
                a = pt.entry_addr(va, level)
                v = env.mem.read64(a)
                env.mem.write64(a, (v | XD) if bit == XD else (v & ~bit))
                what = f"{name} at {level.name} ({size.label} page)"
                if bit == RW:
                    expect(await env.translate(va, W, True), code=error_code(W, True, present=True), what=what)
                    expect(await env.translate(va, W, False), code=error_code(W, False, present=True), what=what)
                    expect(await env.translate(va, R, True), fault=FaultKind.NONE, what=what)
                    await env.set_flags(wp=False)
                    expect(await env.translate(va + 8, W, False), fault=FaultKind.NONE, what=what + " WP=0")
                    await env.set_flags(wp=True)
                    expect(await env.translate(va + 8, W, False), fault=FaultKind.PAGE, what=what + " WP=1 again")
                elif bit == US:
                    for access in (R, W, X):
                        expect(await env.translate(va, access, True), code=error_code(access, True, present=True),
                               what=what)
                    expect(await env.translate(va, R, False), fault=FaultKind.NONE, what=what)
                else:
                    expect(await env.translate(va, X, True), code=error_code(X, True, present=True), what=what)
                    expect(await env.translate(va, X, False), code=error_code(X, False, present=True), what=what)
                    expect(await env.translate(va, R, True), fault=FaultKind.NONE, what=what)
                    await env.set_flags(nxe=False)  # XD is now a reserved bit, checked by a walk:
                    await env.tb.control(CtlOp.FLUSH_ALL)  # (a cached entry would still complete a read)
                    expect(await env.translate(va + 16, R, True),
                           code=error_code(R, True, present=True, rsvd=True), what=what + " with NXE=0")
                    expect(await env.translate(va + 16, X, False),
                           code=error_code(X, False, present=True, rsvd=True, nxe=False), what=what + " NXE=0")
                    await env.set_flags(nxe=True)


@cosim_test()
async def reserved_bits(env: CosimEnv):
    """Reserved bits M..51 at each level, PS in a PML4E, misaligned 2M/1G frames; PAT (bit 12) is ignored."""
    pt = await boot(env)
    M = env.cfg.maxphyaddr
    base = 0x0000_2000_0000_0000
    n = 0

    async def check(va, access, user, rsvd, what):
        if rsvd:
            expect(await env.translate(va, access, user), code=error_code(access, user, present=True, rsvd=True),
                   what=what)
        else:
            expect(await env.translate(va, access, user), fault=FaultKind.NONE, what=what)

    for size in SIZES:
        for level in (Level.PML4, Level.PDPT, Level.PD, Level.PT):
            if level.value < size.leaf_level.value:
                continue
            for bit in (M, 51, (M + 51) // 2):
                va = base + n * (1 << 39)
                n += 1
                pt.map(va, frame_for(env, size), size, accessed=True, dirty=True)
                a = pt.entry_addr(va, level)
                env.mem.write64(a, env.mem.read64(a) | (1 << bit))
                # every access kind in both modes for the first bit, two of them for the others
                kinds = [(acc, user) for acc in (R, W, X) for user in (False, True)] if bit == M else \
                    [(R, False), (X, True)]
                for acc, user in kinds:
                    await check(va, acc, user, True, f"bit {bit} in {level.name} ({size.label})")
    # PS in a PML4E
    va = base + n * (1 << 39)
    n += 1
    pt.map(va, env.alloc_frame(), accessed=True, dirty=True)
    a = pt.entry_addr(va, Level.PML4)
    env.mem.write64(a, env.mem.read64(a) | PS)
    await check(va, R, False, True, "PS in PML4E")
    # misaligned huge frames; bit 12 (PAT) is not reserved
    for size, bits in ((PageSize.SIZE_2M, (13, 16, 20)), (PageSize.SIZE_1G, (13, 21, 29))):
        for bit in bits + (12,):
            va = base + n * (1 << 39)
            n += 1
            pt.map(va, frame_for(env, size), size, accessed=True, dirty=True)
            a = pt.entry_addr(va, size.leaf_level)
            env.mem.write64(a, env.mem.read64(a) | (1 << bit))
            await check(va + 0x1234, W, False, bit != 12, f"bit {bit} in a {size.label} leaf")
    # a non-present entry with reserved bits: not present, not RSVD
    va = base + n * (1 << 39)
    pt.map(va, env.alloc_frame())
    pt.set_entry(va, Level.PD, (1 << 51) | (1 << M) | PS)
    expect(await env.translate(va, R), code=error_code(R, False, present=False), what="non-present with junk")


@cosim_test()
async def noncanonical(env: CosimEnv):
    """Bits 63:47 not all equal: NONCANONICAL, no lookup, no walk."""
    pt = await boot(env)
    pt.map(0x1000, env.alloc_frame())
    for va in (0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_F000, 0x0001_0000_0000_1000, 0x8000_0000_0000_0000,
               0x7FFF_FFFF_FFFF_FFFF, 0xFFFE_FFFF_FFFF_FFFF):
        for access in (R, W, X):
            for user in (False, True):
                expect(await env.translate(va, access, user), fault=FaultKind.NONCANONICAL, hit=False)
    assert not env.tb.store.reads, "a non-canonical address must not be walked"
    expect(await env.translate(0x1008), fault=FaultKind.NONE)


@cosim_test()
async def accessed_dirty(env: CosimEnv):
    """A set top-down on the first use, D on a write; a write to a clean TLB entry walks again; faults write nothing."""
    pt = await boot(env)
    store = env.tb.store
    for i, size in enumerate(SIZES):
        va = 0x0000_1000_0000_0000 + i * (1 << 39)
        pt.map(va, frame_for(env, size), size, accessed=False, dirty=False)
        clear_nonleaf_a(env, pt, va, size)
        levels = 5 - size.leaf_level.value
        w0 = len(store.writes)
        expect(await env.translate(va + 8, R), hit=False, size=size)
        assert len(store.writes) - w0 == levels, f"{size.label}: expected {levels} A writes"
        w0 = len(store.writes)
        expect(await env.translate(va + 16, R), hit=True)
        expect(await env.translate(va + 16, X), hit=False, what="fetch: ITLB miss, A already set")
        assert len(store.writes) == w0
        expect(await env.translate(va + 24, W), hit=False, what="write to a clean entry walks again")
        assert len(store.writes) - w0 == 1 and store.writes[-1].value & D
        expect(await env.translate(va + 32, W), hit=True)
    # a write as the first access: A and D in one write per entry
    va = 0x0000_2000_0000_0000
    pt.map(va, env.alloc_frame(), accessed=False, dirty=False)
    clear_nonleaf_a(env, pt, va)
    w0 = len(store.writes)
    expect(await env.translate(va, W), hit=False)
    assert len(store.writes) - w0 == 4 and store.writes[-1].value & (A | D) == A | D
    # faulting walks write nothing: not present below clean entries, and a protection fault
    va = 0x0000_3000_0000_0000
    pt.map(va, env.alloc_frame(), accessed=False, writable=False)
    clear_nonleaf_a(env, pt, va)
    pt.map(va + 0x1000, env.alloc_frame(), accessed=False)
    pt.unmap(va + 0x1000)
    w0 = len(store.writes)
    expect(await env.translate(va + 0x1000, R), fault=FaultKind.PAGE)
    expect(await env.translate(va, W, True), code=error_code(W, True, present=True))
    assert len(store.writes) == w0, "a faulting walk must not write A/D"
    expect(await env.translate(va, R, True), fault=FaultKind.NONE)


@cosim_test()
async def flush_kinds(env: CosimEnv):
    """Every flush kind and CR3 write, with 4K/2M/1G, global and PCID-tagged entries."""
    await env.set_flags(pcide=True)
    p1, p2 = env.new_tables(), env.new_tables()
    glob = 0xFFFF_8880_0000_0000
    gpa = env.alloc_frame()
    pages = {}
    for pt in (p1, p2):
        pt.map(glob, gpa, global_=True, user=False, accessed=True, dirty=True)
        for size, va in ((PageSize.SIZE_4K, 0x10_0000_1000), (PageSize.SIZE_4K, 0x10_0000_2000),
                         (PageSize.SIZE_2M, 0x20_0020_0000), (PageSize.SIZE_1G, 0x40_4000_0000)):
            pt.map(va, frame_for(env, size), size, accessed=True, dirty=True)
            pages[va] = size
    all_vas = list(pages) + [glob]
    await env.write_cr3(p1.pml4 | 1)

    async def touch_all(fill=True):
        for va in all_vas:
            await env.translate(va + 0x18, R)
            await env.translate(va + 0x18, X)

    await touch_all()
    await touch_all()  # all hits now
    for op, value in ((CtlOp.FLUSH_VA, 0x10_0000_1234), (CtlOp.FLUSH_VA, 0x20_0020_0000 + 0x1F_F000),
                      (CtlOp.FLUSH_VA, 0x40_4000_0000 + 0x3000_0000), (CtlOp.FLUSH_VA, glob + 8),
                      (CtlOp.FLUSH_PCID, 2), (CtlOp.FLUSH_PCID, 1), (CtlOp.FLUSH_ALL_KEEP_GLOBAL, 0),
                      (CtlOp.FLUSH_ALL, 0)):
        await env.tb.control(op, value)
        await touch_all()
    # CR3 writes: without no-flush the new PCID's non-global entries go; with it they stay
    await env.write_cr3(p2.pml4 | 2)
    await touch_all()
    await env.write_cr3(p1.pml4 | 1, noflush=True)
    await touch_all()  # p1's entries survived (hits, checked by the scoreboard)
    await env.write_cr3(p2.pml4 | 2, noflush=True)
    expect(await env.translate(0x10_0000_1000), hit=True, what="PCID 2 entries survive a no-flush switch")
    await env.write_cr3(p2.pml4 | 2)
    expect(await env.translate(0x10_0000_1000), hit=False, what="CR3 write without no-flush")
    expect(await env.translate(glob), hit=True, what="global entry survives a CR3 write")
    # PCIDE off: CR3 write flushes every non-global entry, bit 63 is not honoured
    await env.set_flags(pcide=False)
    await env.write_cr3(p1.pml4)
    await touch_all()
    await env.write_cr3(p1.pml4, noflush=True)
    expect(await env.translate(0x10_0000_1000), hit=False, what="no-flush is ignored without PCIDE")
    expect(await env.translate(glob), hit=True)


@cosim_test(dram={"latency": 24})
async def flush_during_walk(env: CosimEnv):
    """A flush (or CR3 write) accepted while a walk is in flight: the walk answers but fills nothing."""
    await env.set_flags(pcide=True)
    pt = env.new_tables()
    await env.write_cr3(pt.pml4 | 5)
    store, tb = env.tb.store, env.tb
    ops = [(CtlOp.FLUSH_VA, 0xDEAD_0000), (CtlOp.FLUSH_ALL, 0), (CtlOp.FLUSH_ALL_KEEP_GLOBAL, 0),
           (CtlOp.FLUSH_PCID, 5), (CtlOp.FLUSH_PCID, 9), (CtlOp.WRITE_CR3, pt.pml4 | 5 | (1 << 63)),
           (CtlOp.WRITE_CR3, pt.pml4 | 5)]
    n = tested = 0
    for op, value in ops:
        for after_reads in (0, 1, 3):
            for size in SIZES:
                va = 0x0000_0100_0000_0000 + n * (1 << 31)
                n += 1
                pt.map(va, frame_for(env, size), size, accessed=after_reads != 3, dirty=False)
                r0 = len(store.reads)
                req = tb.submit(va + 8, W if after_reads == 3 else R)
                await tb.wait_until(lambda: (req.accept_cycle >= 0 and len(store.reads) - r0 >= after_reads)
                                    or req.response is not None, limit=5000)
                if req.response is not None:
                    continue  # the walk was shorter than the wait (PWC): nothing to test here
                tested += 1
                cyc = await tb.control(op, value)
                resp = await tb.wait_response(req)
                assert req.accept_cycle <= cyc <= resp.cycle, "the flush was not accepted during the walk"
                expect(resp, hit=False, fault=FaultKind.NONE)
                expect(await env.translate(va + 16, R), hit=False, what=f"{op.name} during the walk: no fill")
                expect(await env.translate(va + 24, R), hit=True, what="the second walk filled")
    assert tested >= 2 * len(ops), f"only {tested} flushes landed inside a walk"
    env.extra["flushes_inside_walks"] = tested
    # a flush and a request offered in the same cycle
    for op, value in ops:
        va = 0x0000_0200_0000_0000 + n * (1 << 31)
        n += 1
        pt.map(va, env.alloc_frame(), accessed=True, dirty=True)
        await env.translate(va)
        req = tb.submit(va + 8)
        tb.submit_ctl(op, value)
        await tb.wait_response(req)
        await env.translate(va + 16)


@cosim_test()
async def cr3_pcid_global(env: CosimEnv):
    """Two address spaces mapping the same VA differently, global pages, PCID on and off."""
    p1, p2 = env.new_tables(), env.new_tables()
    va, glob = 0x5555_5555_4000, 0xFFFF_FFFF_8100_0000
    pa1, pa2, gpa = env.alloc_frame(), env.alloc_frame(), env.alloc_frame()
    p1.map(va, pa1, accessed=True, dirty=True)
    p2.map(va, pa2, accessed=True, dirty=True)
    for pt in (p1, p2):
        pt.map(glob, gpa, global_=True, user=False, accessed=True, dirty=True)
    # PCIDE off: every CR3 write drops the non-global entries
    await env.write_cr3(p1.pml4)
    expect(await env.translate(va), paddr=pa1, hit=False)
    expect(await env.translate(glob), paddr=gpa, hit=False)
    await env.write_cr3(p2.pml4)
    expect(await env.translate(va), paddr=pa2, hit=False)
    expect(await env.translate(glob), paddr=gpa, hit=True, what="global survives CR3 write")
    # PCIDE on: both address spaces cached side by side
    await env.set_flags(pcide=True)
    await env.write_cr3(p1.pml4 | 0x123)
    expect(await env.translate(va), paddr=pa1, hit=False)
    await env.write_cr3(p2.pml4 | 0x456)
    expect(await env.translate(va), paddr=pa2, hit=False)
    await env.write_cr3(p1.pml4 | 0x123, noflush=True)
    expect(await env.translate(va), paddr=pa1, hit=True, what="PCID 0x123 kept")
    await env.write_cr3(p2.pml4 | 0x456, noflush=True)
    expect(await env.translate(va), paddr=pa2, hit=True, what="PCID 0x456 kept")
    expect(await env.translate(glob), paddr=gpa, hit=True)
    await env.tb.control(CtlOp.FLUSH_PCID, 0x123)
    await env.write_cr3(p1.pml4 | 0x123, noflush=True)
    expect(await env.translate(va), paddr=pa1, hit=False, what="FLUSH_PCID dropped PCID 0x123")
    await env.write_cr3(p2.pml4 | 0x456, noflush=True)
    expect(await env.translate(va), paddr=pa2, hit=True)
    # CR3 PCID bits are ignored with PCIDE off: entries are tagged PCID 0
    await env.set_flags(pcide=False)
    await env.write_cr3(p1.pml4)
    expect(await env.translate(va), paddr=pa1, hit=False)


@cosim_test()
async def superpage_set_index(env: CosimEnv):
    """Superpages live in a fully associative array: any 4 KiB slice of a 2M/1G page hits after one fill."""
    pt = await boot(env)
    sets = env.cfg.dtlb.sets
    huge = 0x0000_0ABC_0000_0000 + 0x60_0000  # a 2 MiB page whose slices span many main-array sets
    giant = 0x0000_0DEF_4000_0000
    hpa, gpa = env.alloc_aligned(1 << 21), env.alloc_aligned(1 << 30)
    pt.map(huge, hpa, PageSize.SIZE_2M, accessed=True, dirty=True)
    pt.map(giant, gpa, PageSize.SIZE_1G, accessed=True, dirty=True)
    expect(await env.translate(huge), hit=False, size=PageSize.SIZE_2M)
    for k in range(1, 2 * sets + 3):
        expect(await env.translate(huge + k * 0x1000 + 8), hit=True, paddr=hpa + k * 0x1000 + 8,
               what=f"2M page slice {k}")
    expect(await env.translate(giant + 0x3FFF_F000), hit=False, size=PageSize.SIZE_1G)
    for k in (1, 3, 511, 512, 513, 0x3FFFF):
        expect(await env.translate(giant + k * 0x1000), hit=True, paddr=gpa + k * 0x1000, what=f"1G slice {k}")
    # 4 KiB pages in the same sets as those slices do not disturb the superpage entries
    for k in range(2 * sets):
        va = 0x0000_0ABC_4000_0000 + k * 0x1000
        pt.map(va, env.alloc_frame(), accessed=True, dirty=True)
        await env.translate(va)
    expect(await env.translate(huge + 0x5000), hit=True)
    expect(await env.translate(giant + 0x5000), hit=True)
    # more superpages than the array holds: replacement inside the superpage array
    n = env.cfg.dtlb.superpage_entries + 3
    vas = []
    for i in range(n):
        va = 0x0000_0E00_0000_0000 + i * 0x20_0000 * 3
        pt.map(va, env.alloc_aligned(1 << 21), PageSize.SIZE_2M, accessed=True, dirty=True)
        vas.append(va)
    for rep in range(3):
        for i, va in enumerate(vas):
            await env.translate(va + rep * 0x1000, X if rep == 2 else R)
        for i in (0, 2, 1, 0):
            await env.translate(vas[i])


@cosim_test()
async def smep_smap_wp(env: CosimEnv):
    """SMEP, SMAP and WP on the walk path and on the TLB-hit path (a match that cannot complete walks)."""
    pt = await boot(env)
    upage, kpage, ro = 0x0000_4444_0000, 0xFFFF_C000_1234_5000, 0x0000_4444_1000
    pt.map(upage, env.alloc_frame(), user=True, accessed=True, dirty=True)
    pt.map(kpage, env.alloc_frame(), user=False, accessed=True, dirty=True)
    pt.map(ro, env.alloc_frame(), user=True, writable=False, accessed=True, dirty=True)
    # SMEP: supervisor fetch from a user page
    expect(await env.translate(upage, X, False), fault=FaultKind.NONE)
    await env.set_flags(smep=True)
    expect(await env.translate(upage, X, False), hit=False, code=error_code(X, False, present=True, smep=True),
           what="SMEP on: the ITLB entry cannot complete, the walk faults")
    expect(await env.translate(upage, X, True), fault=FaultKind.NONE, what="user fetch is fine")
    expect(await env.translate(kpage, X, False), fault=FaultKind.NONE)
    await env.set_flags(smep=False, nxe=False)
    expect(await env.translate(upage + 8, X, False), fault=FaultKind.NONE)
    await env.set_flags(smep=True)
    expect(await env.translate(upage + 8, X, False), code=PF_P | PF_ID, what="I/D set by SMEP alone (NXE=0)")
    await env.set_flags(smep=False)
    expect(await env.translate(kpage, X, True), code=PF_P | PF_US, what="I/D clear when neither NXE nor SMEP")
    await env.set_flags(nxe=True)
    # SMAP: supervisor data access to a user page
    expect(await env.translate(upage, R, False), fault=FaultKind.NONE)
    expect(await env.translate(upage, W, False), fault=FaultKind.NONE)
    await env.set_flags(smap=True)
    expect(await env.translate(upage, R, False), hit=False, code=error_code(R, False, present=True), what="SMAP")
    expect(await env.translate(upage, W, False), code=error_code(W, False, present=True), what="SMAP write")
    expect(await env.translate(upage, R, True), fault=FaultKind.NONE)
    expect(await env.translate(kpage, W, False), fault=FaultKind.NONE)
    # SMAP on user huge pages: the fault is found at the 2M (PD) or 1G (PDPT) leaf
    huge = {PageSize.SIZE_2M: 0x0000_5555_4060_0000, PageSize.SIZE_1G: 0x0000_6666_4000_0000}
    for size, va in huge.items():
        pt.map(va, frame_for(env, size), size, user=True, accessed=True, dirty=True)
        expect(await env.translate(va + 0x1238, R, False), hit=False, code=error_code(R, False, present=True),
               what=f"SMAP, {size.label} user page")
        expect(await env.translate(va + 0x1238, R, True), size=size, what=f"user read of the {size.label} page")
    await env.set_flags(smap=False)
    expect(await env.translate(upage, R, False), fault=FaultKind.NONE)
    # WP: supervisor write to a read-only page
    expect(await env.translate(ro, W, False), code=error_code(W, False, present=True), what="WP=1")
    await env.set_flags(wp=False)
    expect(await env.translate(ro, W, False), fault=FaultKind.NONE, what="WP=0")
    expect(await env.translate(ro, W, False), hit=True, what="WP=0: the entry completes")
    expect(await env.translate(ro, W, True), code=error_code(W, True, present=True), what="user write, WP=0")
    await env.set_flags(wp=True)
    expect(await env.translate(ro, R, True), fault=FaultKind.NONE)
    expect(await env.translate(ro, W, False), hit=False, code=error_code(W, False, present=True),
           what="WP=1 again: the cached entry cannot complete")


@cosim_test(dram={"latency": 16})
async def reset_mid_walk(env: CosimEnv):
    """Reset in the middle of a walk (and of its A/D writes): the MMU comes back empty and correct."""
    tb, store = env.tb, env.tb.store
    pt = await boot(env)
    va = 0x0000_7777_0000_0000
    for i in range(4):
        pt.map(va + i * 0x1000, env.alloc_frame(), accessed=False)
    clear_nonleaf_a(env, pt, va)
    resets = 0
    for stage in ("first read", "third read", "A/D writes"):
        await boot_again(env, pt)
        r0, w0 = len(store.reads), len(store.writes)
        req = tb.submit(va + 0x1000 * (1 + ("first read", "third read", "A/D writes").index(stage)), W)
        if stage == "first read":
            await tb.wait_until(lambda: len(store.reads) > r0, limit=2000)
        elif stage == "third read":
            await tb.wait_until(lambda: len(store.reads) > r0 + 2 or req.response is not None, limit=2000)
        else:
            await tb.wait_until(lambda: len(store.writes) > w0 or req.response is not None, limit=2000)
        if req.response is None:
            await env.reset()
            resets += 1
        # after a reset CR3 is 0 again: reload it; then everything works
        await boot_again(env, pt)
        expect(await env.translate(va + 8, R), hit=False, what=f"after reset at {stage}")
        expect(await env.translate(va + 16, R), hit=True)
        expect(await env.translate(va + 0x3000, W), fault=FaultKind.NONE)
    assert resets >= 2, f"only {resets} resets landed inside a walk"
    env.extra["resets_inside_walks"] = resets


async def boot_again(env: CosimEnv, pt) -> None:
    await env.write_cr3(pt.pml4)


@cosim_test(dram={"kind": "ddr", "tRCD": 5, "tCL": 4, "tRP": 6, "jitter": 9, "ready_drop": 0.4},
            resp_stall_prob=0.4, req_gap_prob=0.3)
async def backpressure(env: CosimEnv):
    """Random DRAM latency, mem_req.ready drops, resp.ready stalls and request gaps, on a mixed sequence."""
    pt = await boot(env)
    vas = []
    for i in range(32):
        va = 0x0000_3333_0000_0000 + (i % 8) * 0x1000 + (i // 8) * (1 << 30)
        pt.map(va, env.alloc_frame(), accessed=bool(i & 1), dirty=bool(i & 2), writable=i % 5 != 0)
        vas.append(va)
    reqs = []
    for rep in range(6):
        for i, va in enumerate(vas):
            reqs.append(env.tb.submit(va + 8 * rep, (R, W, X)[(i * 7 + rep) % 3], bool(i & 4)))
        if rep == 3:
            env.tb.submit_ctl(CtlOp.FLUSH_ALL, 0)
    for r in reqs:
        await env.tb.wait_response(r)
    assert env.tb.dram.stats.ready_drops > 0 and env.tb.dram.stats.resp_stall_cycles >= 0


async def _replacement(env: CosimEnv, pt, tlb: str, superpage: bool) -> None:
    """Fill one set beyond its ways with a pattern of touches; the hit/miss of every access (checked
    against the reference's policy) proves the victim order."""
    cfg = getattr(env.cfg, tlb)
    access = X if tlb == "itlb" else R
    rng = env.rng
    if superpage:
        ways, stride, size = cfg.superpage_entries, 0x20_0000, PageSize.SIZE_2M
        base = 0x0000_0600_0000_0000 if tlb == "dtlb" else 0x0000_0700_0000_0000
    else:
        ways, stride, size = cfg.ways, cfg.sets * 0x1000, PageSize.SIZE_4K
        base = 0x0000_0400_0000_0000 if tlb == "dtlb" else 0x0000_0500_0000_0000
        base += rng.randrange(cfg.sets) * 0x1000  # some set
    vas = []
    for k in range(ways + 3):
        va = base + k * stride
        pt.map(va, frame_for(env, size), size, accessed=True, dirty=True)
        vas.append(va)
    for _ in range(8 * ways + 16):
        k = rng.randrange(len(vas)) if rng.random() < 0.7 else rng.randrange(min(ways, len(vas)))
        await env.translate(vas[k] + 8, access)
    for k in range(len(vas)):  # sweep: every way is replaced in policy order
        await env.translate(vas[k], access)
    for k in reversed(range(len(vas))):
        await env.translate(vas[k], access)


@cosim_test()
async def replacement(env: CosimEnv):
    """Replacement order of the configured policy: DTLB and ITLB, main and superpage arrays."""
    pt = await boot(env)
    for tlb in ("dtlb", "itlb"):
        for superpage in (False, True):
            await _replacement(env, pt, tlb, superpage)
    st = env.sb.stats
    assert st.hits and st.misses


@cosim_test()
async def checker_selftest(env: CosimEnv):
    """A short fixed sequence.  Passes as is; sim/regression.py also runs it with a fault injected
    (a flipped P bit in DRAM data, a flush hidden from the reference, a DRAM that stops answering)
    and requires the scoreboard or the watchdog to catch it."""
    pt = await boot(env)
    vas = [0x0000_1111_0000_0000 + i * 0x1000 for i in range(4)]
    for va in vas:
        pt.map(va, env.alloc_frame(), accessed=True, dirty=True)
    for va in vas:
        await env.translate(va)
    await env.tb.control(CtlOp.FLUSH_ALL)
    for va in vas:
        expect(await env.translate(va + 8), hit=False, what="after FLUSH_ALL")


@cosim_test()
async def self_map(env: CosimEnv):
    """A PML4 entry that points back at the PML4 (the recursive 'self-map'): one entry read at several
    levels of one walk.  Checks the reads, the A/D writes (one per entry read, docs/reference.md) and
    the PWC filled from such a walk."""
    pt = await boot(env)
    k, j = 0x0ED, 0x0AB  # both below 256: the addresses stay canonical without sign extension
    pml4 = pt.pml4
    env.mem.write64(pml4 + 8 * k, pml4 | P | RW)  # self-map, A clear
    pt.map(j << 39, env.alloc_frame(), accessed=True, dirty=True)  # makes PML4[j] present
    va = (k << 39) | (k << 30) | (k << 21) | (j << 12)  # PML4[k] -> PML4[k] -> PML4[k] -> PML4[j] as a PTE
    w0 = len(env.tb.store.writes)
    expect(await env.translate(va + 0x10, R), fault=FaultKind.NONE, paddr=(env.mem.read64(pml4 + 8 * j) &
                                                                        ~0xFFF & ((1 << env.cfg.maxphyaddr) - 1)) + 0x10)
    env.extra["self_map_writes"] = len(env.tb.store.writes) - w0
    expect(await env.translate(va + 0x18, R), hit=True)
    expect(await env.translate(va + 0x20, W), hit=True, what="the leaf (PML4[j], made with A and D) is dirty")
    # a neighbour through the same self-map (starts from the PWC when there is one): PML4[k] is also the
    # leaf, so this maps the PML4 page itself; its D is clear, so the write walks again and sets it
    va2 = (k << 39) | (k << 30) | (k << 21) | (k << 12)
    expect(await env.translate(va2, R), paddr=pml4)
    expect(await env.translate(va2 + 8, W), hit=False, paddr=pml4 + 8)
    # the same with every self-map read A-clear again (after a flush): one write per entry read
    env.kernel_edit_ok()
    env.mem.write64(pml4 + 8 * k, pml4 | P | RW)
    await env.tb.control(CtlOp.FLUSH_ALL)
    w0 = len(env.tb.store.writes)
    expect(await env.translate(va2 + 16, W), hit=False, paddr=pml4 + 16)
    env.extra["self_map_writes_4"] = len(env.tb.store.writes) - w0


@cosim_test()
async def high_physical(env: CosimEnv):
    """Page tables and frames at the top of physical memory (addresses with bit M-1 set)."""
    M = env.cfg.maxphyaddr
    top = 1 << M
    pml4, pdpt, pd, ptab = (top - 0x1000 * i for i in (1, 2, 3, 4))
    flags = P | RW | US
    va = 0x0000_7FFF_FFFF_F000
    env.mem.write64(pml4 + 8 * Level.PML4.index(va), pdpt | flags)
    env.mem.write64(pdpt + 8 * Level.PDPT.index(va), pd | flags)
    env.mem.write64(pd + 8 * Level.PD.index(va), ptab | flags)
    frame = top - 0x10_0000
    env.mem.write64(ptab + 8 * Level.PT.index(va), frame | flags | A)
    huge_va = 0x0000_7FFF_FFE0_0000 - 0x20_0000
    env.mem.write64(pd + 8 * Level.PD.index(huge_va), (top - 0x20_0000) | flags | PS | A | D)
    await env.write_cr3(pml4)
    expect(await env.translate(va + 0xFF8, W), paddr=frame + 0xFF8, what="frame near 2**M")
    expect(await env.translate(huge_va + 0x1F_FFF8, R), paddr=top - 8, size=PageSize.SIZE_2M)
    expect(await env.translate(va + 8, W), hit=True)


@cosim_test()
async def multi_match(env: CosimEnv):
    """Two valid TLB entries matching one lookup.  docs/reference.md says at most one entry can match, which
    holds while every page-table change is followed by its flush; a global page mapped differently in two
    address spaces breaks that.  The reference resolves it like a priority encoder (model/reference/ref_tlb.py: the main
    array before the superpage array, the lowest way within an array); the hardware must agree."""
    await env.set_flags(pcide=True)
    p1, p2 = env.new_tables(), env.new_tables()
    x = 0x0000_3000_0000_0000
    pa1, pa_big = env.alloc_frame(), env.alloc_aligned(1 << 21)
    p1.map(x + 0x5000, pa1, accessed=True, dirty=True)  # 4K, PCID 1
    p2.map(x, pa_big, PageSize.SIZE_2M, global_=True, accessed=True, dirty=True)  # 2M global, covers x+0x5000
    y = 0x0000_3100_0000_0000
    pa3, pa4 = env.alloc_frame(), env.alloc_frame()
    p1.map(y, pa4, accessed=True, dirty=True)  # 4K, PCID 1
    p2.map(y, pa3, global_=True, accessed=True, dirty=True)  # 4K global, same VA
    await env.write_cr3(p1.pml4 | 1)
    expect(await env.translate(x + 0x5008), paddr=pa1 + 8)
    expect(await env.translate(y + 8), paddr=pa4 + 8)
    await env.write_cr3(p2.pml4 | 2, noflush=True)
    expect(await env.translate(x + 0x5008), paddr=pa_big + 0x5008, what="PCID 2 sees only the global 2M page")
    expect(await env.translate(y + 8), paddr=pa3 + 8, what="PCID 2 sees only the global 4K page")
    await env.write_cr3(p1.pml4 | 1, noflush=True)
    for off in (0x5010, 0x6000):
        await env.translate(x + off)  # 4K entry and 2M global entry both match at 0x5010
    await env.translate(y + 16)  # two 4K entries in one set match
    await env.translate(y + 16, X)
    await env.tb.control(CtlOp.FLUSH_VA, y)
    expect(await env.translate(y + 24), hit=False, what="INVLPG drops both")
    await env.tb.control(CtlOp.FLUSH_PCID, 1)
    await env.translate(x + 0x5018)  # only the global 2M entry is left
