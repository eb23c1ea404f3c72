"""hw/tlb.py alone in Amaranth's simulator, against the reference TLB (model/reference/ref_tlb.py).

A random sequence of lookups (stage-0 set read, stage-1 compare and commit), fills after the lookups that
did not hit (as the MMU top fills: same vaddr and PCID, any page size), and flushes of every kind
(all, all but global, one PCID, one VA in the current PCID: the two-cycle prepare/compare) runs on the
hardware TLB and on ``ref_tlb.TLB`` configured alike.  Every lookup's matched/hit, paddr and size must
agree; replacement (each policy), fill in place, priority between duplicates and flushes are observed
through them.  Directed cases check superpages across main-array sets and flush-by-VA of a covering
1 GiB entry.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hw.tlb import TLB
from model.config import MMUConfig, Policy, TLBConfig
from model.reference.ref_tlb import TLB as RefTLB
from model.reference.ref_walker import ControlRegs, access_allowed
from model.x86.pte import Access, PageSize
from tests.hwsim import seeded, simulate

VA48 = (1 << 48) - 1


class Bench:
    """One hardware TLB and its reference, driven in step."""

    def __init__(self, tcfg: TLBConfig, ctrl: ControlRegs, lfsr_seed=0xACE1, maxphyaddr=40):
        self.cfg = MMUConfig(dtlb=tcfg, lfsr_seed=lfsr_seed, maxphyaddr=maxphyaddr)
        self.dut = TLB(tcfg, self.cfg, "dtlb")
        self.ref = RefTLB(tcfg, lfsr_seed)
        self.ctrl = ctrl
        self.seen = {"hit": 0, "miss": 0, "blocked": 0, "fill": 0, "flush": 0}

    async def lookup(self, ctx, va, pcid, access, user):
        """Read the set, look up and commit; returns the hardware's (matched, hit, paddr, size)."""
        lk, ctrl = self.dut.lookup, self.ctrl
        ctx.set(lk.read, 1)
        ctx.set(lk.read_vaddr, va & VA48)
        await ctx.tick()
        ctx.set(lk.read, 0)
        for k, v in dict(vaddr=va & VA48, pcid=pcid, access=access, user=user, commit=1).items():
            ctx.set(getattr(lk, k), v)
        for k in ("wp", "nxe", "smep", "smap", "pcide"):
            ctx.set(lk.flags[k], getattr(ctrl, k))
        got = tuple(ctx.get(getattr(lk, k)) for k in ("matched", "hit", "paddr", "size"))
        await ctx.tick()
        ctx.set(lk.commit, 0)

        e = self.ref.lookup(va, pcid)
        hit = e is not None and access_allowed(e.writable, e.user, e.nx, access, user, ctrl) \
            and (access != Access.WRITE or e.dirty)
        if e is not None and hit:
            self.ref.touch(e)
        elif e is not None:
            self.ref.invalidate(e)
        self.seen["hit" if hit else "blocked" if e is not None else "miss"] += 1
        if hit:
            want = (1, 1, e.frame | (va & (e.size.bytes - 1)), int(e.size))
            assert got == want, f"lookup {va:#x} pcid {pcid}: hw {got}, ref {want}"
        else:
            assert got[:2] == (int(e is not None), 0), f"lookup {va:#x} pcid {pcid}: hw {got[:2]}, ref entry {e}"
        return hit

    async def fill(self, ctx, va, pcid, size: PageSize, frame, *, rw, us, nx, dirty, global_):
        f = self.dut.fill
        ctx.set(f.en, 1)
        for k, v in dict(vaddr=va & VA48, pcid=pcid, size=size, frame=frame >> 12, rw=rw, us=us, nx=nx,
                         dirty=dirty, global_=global_).items():
            ctx.set(f.entry[k], v)
        await ctx.tick()
        ctx.set(f.en, 0)
        self.ref.fill(va, pcid, SimpleNamespace(size=size, frame=frame, writable=rw, user=us, nx=nx, dirty=dirty,
                                                global_=global_))
        self.seen["fill"] += 1

    async def flush(self, ctx, *, keep_global=0, match_pcid=0, pcid=0, match_va=0, va=0):
        fl = self.dut.flush
        for k, v in dict(keep_global=keep_global, match_pcid=match_pcid, pcid=pcid, match_va=match_va,
                         va=va & VA48).items():
            ctx.set(fl.which[k], v)
        if match_va:
            ctx.set(fl.prepare, 1)
            await ctx.tick()
            ctx.set(fl.prepare, 0)
        ctx.set(fl.en, 1)
        await ctx.tick()
        ctx.set(fl.en, 0)
        kind = (keep_global, match_pcid, match_va)
        if kind == (0, 0, 0):
            self.ref.flush_all()
        elif kind == (1, 0, 0):
            self.ref.flush_all(keep_global=True)
        elif kind == (1, 1, 0):
            self.ref.flush_pcid(pcid)
        else:
            assert kind == (0, 1, 1), kind
            self.ref.flush_va(va, pcid)
        self.seen["flush"] += 1


def va_pool(rng, tcfg: TLBConfig):
    """Pages that crowd a few sets (so the policy chooses victims) and a few huge-page regions."""
    sb = tcfg.set_bits
    small = [(tag << (12 + sb)) | (s << 12) for tag in range(tcfg.ways + 2) for s in range(min(tcfg.sets, 3))]
    huge = [rng.randrange(1 << 27) << 21 for _ in range(3)] + [rng.randrange(1 << 18) << 30 for _ in range(2)]
    return small + huge


CONFIGS = {
    "32x4-plru": TLBConfig(32, 4, Policy.PLRU, 4),
    "fa8-lru": TLBConfig(8, 8, Policy.LRU, 2),
    "64x4-fifo": TLBConfig(64, 4, Policy.FIFO, 4),
    "16x4-random": TLBConfig(16, 4, Policy.RANDOM, 2),
    "4x1-lru": TLBConfig(4, 1, Policy.LRU, 1),
    "16x8-plru": TLBConfig(16, 8, Policy.PLRU, 8),
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_tlb_matches_reference(name, seed):
    seed = seed * 7907 + len(name)
    rng = seeded(f"test_tlb_matches_reference[{name}]", seed)
    tcfg = CONFIGS[name]
    ctrl = ControlRegs(wp=rng.random() < 0.7, nxe=rng.random() < 0.7, smep=rng.random() < 0.3,
                       smap=rng.random() < 0.3)
    b = Bench(tcfg, ctrl, lfsr_seed=0x1234 + seed)
    pool, pcids = va_pool(rng, tcfg), (0, 0x2A5)

    async def testbench(ctx):
        for _ in range(220):
            r = rng.random()
            if r < 0.08:
                kind = rng.choice(((0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 1), (0, 1, 1)))
                await b.flush(ctx, keep_global=kind[0], match_pcid=kind[1], match_va=kind[2],
                              pcid=rng.choice(pcids), va=rng.choice(pool) | rng.randrange(1 << 12))
                continue
            va = (rng.choice(pool) | rng.randrange(1 << 12 if r < 0.7 else 1 << 21)) & VA48
            va |= 0xFFFF << 48 if va >> 47 else 0
            pcid = rng.choice(pcids)
            access, user = rng.choice(list(Access)), rng.random() < 0.7
            if await b.lookup(ctx, va, pcid, access, user):
                continue
            size = rng.choices(list(PageSize), (6, 2, 1))[0]
            frame = rng.randrange(1 << (40 - size.shift)) << size.shift
            await b.fill(ctx, va, pcid, size, frame, rw=rng.random() < 0.8, us=rng.random() < 0.85,
                         nx=rng.random() < 0.15, dirty=rng.random() < 0.6 or access == Access.WRITE,
                         global_=rng.random() < 0.15)

    simulate(b.dut, testbench)
    assert min(b.seen.values()) >= 3, b.seen


def test_a_superpage_hits_from_every_main_array_set():
    """docs/reference.md, TLB organisation: superpages never go through a set index, so a 2 MiB entry
    answers for each 4 KiB page inside it, whatever set that page's VPN would select."""
    b = Bench(TLBConfig(32, 4, Policy.PLRU, 4), ControlRegs())
    base = 0x7F12_3440_0000

    async def testbench(ctx):
        assert not await b.lookup(ctx, base, 0, Access.READ, True)
        await b.fill(ctx, base, 0, PageSize.SIZE_2M, 0x1_2340_0000, rw=1, us=1, nx=0, dirty=1, global_=0)
        for page in range(9):  # sets 0..7 and back to 0
            assert await b.lookup(ctx, base + page * 0x1000 + 0x18, 0, Access.READ, True)

    simulate(b.dut, testbench)
    assert b.seen["hit"] == 9


def test_flush_va_drops_the_covering_giant_page_and_keeps_the_rest():
    """INVLPG of one 4 KiB address inside a 1 GiB page drops that entry (any size covering the VA),
    not a 4 KiB entry of another page in the same set, and not another PCID's non-global entry; a
    global entry goes whatever PCID filled it (ARCHITECTURE.md, Invalidation)."""
    b = Bench(TLBConfig(16, 2, Policy.LRU, 2), ControlRegs(pcide=True))
    giant, other, shared = 0x40_0000_0000, 0x2000_0000, 0x3000  # other is in set 0, as the flushed giant + 0x8000

    async def testbench(ctx):
        for va, size, pcid, global_ in ((giant, PageSize.SIZE_1G, 1, 0), (other, PageSize.SIZE_4K, 1, 0),
                                        (giant, PageSize.SIZE_1G, 2, 0), (shared, PageSize.SIZE_4K, 2, 1)):
            assert not await b.lookup(ctx, va, pcid, Access.READ, False)
            await b.fill(ctx, va, pcid, size, 0x8000_0000 if size else 0x5000, rw=1, us=0, nx=0, dirty=1,
                         global_=global_)
        await b.flush(ctx, match_pcid=1, pcid=1, match_va=1, va=giant + 0x8000)
        assert not await b.lookup(ctx, giant + 0x123, 1, Access.READ, False)
        assert await b.lookup(ctx, other, 1, Access.READ, False)
        assert await b.lookup(ctx, giant + 0x123, 2, Access.READ, False)
        # a global entry filled by PCID 2 answers in PCID 1 too, and INVLPG in PCID 1 drops it
        assert await b.lookup(ctx, shared, 1, Access.READ, False)
        await b.flush(ctx, match_pcid=1, pcid=1, match_va=1, va=shared + 0x8)
        assert not await b.lookup(ctx, shared, 2, Access.READ, False)

    simulate(b.dut, testbench)


def test_a_fill_replaces_the_other_match_in_place():
    """docs/reference.md, TLB organisation: of duplicate matches the lowest way answers; when it cannot
    complete it is dropped, and the walk's fill replaces the remaining match in place (here a global entry
    of the same page), not the lowest invalid way."""
    b = Bench(TLBConfig(4, 2, Policy.LRU, 1), ControlRegs(pcide=True))
    va = 0x5000

    async def testbench(ctx):
        assert not await b.lookup(ctx, va, 1, Access.READ, False)
        await b.fill(ctx, va, 1, PageSize.SIZE_4K, 0x7000, rw=1, us=0, nx=0, dirty=0, global_=0)  # way 0
        assert not await b.lookup(ctx, va, 2, Access.READ, False)
        await b.fill(ctx, va, 2, PageSize.SIZE_4K, 0x8000, rw=1, us=0, nx=0, dirty=1, global_=1)  # way 1
        assert not await b.lookup(ctx, va, 1, Access.WRITE, False)  # way 0 answers, clean: dropped
        await b.fill(ctx, va, 1, PageSize.SIZE_4K, 0x9000, rw=1, us=0, nx=0, dirty=1, global_=0)
        assert await b.lookup(ctx, va, 1, Access.WRITE, False)
        assert not await b.lookup(ctx, va, 2, Access.READ, False)  # the global entry was the one replaced

    simulate(b.dut, testbench)
