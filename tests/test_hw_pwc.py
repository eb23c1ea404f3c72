"""hw/pwc.py alone in Amaranth's simulator, against the reference page-walk cache (model/reference/ref_pwc.py).

Random lookups (committed, so a hit becomes most recently used), fills as the walker makes them (after a
lookup, the non-leaf entries below the deepest hit, top-down, one per cycle) and flushes (all, one PCID)
run on both; every lookup's hit, level, next-table base and combined rights must agree, which also
checks the true-LRU victim choice.  Directed cases: the deepest level wins, the LRU slot is the one
replaced.
"""

from __future__ import annotations

import pytest

from hw.pwc import PageWalkCache
from model.config import MMUConfig
from model.reference.ref_pwc import PageWalkCache as RefPWC
from model.x86.pte import Level
from tests.hwsim import seeded, simulate


class Bench:
    def __init__(self, entries: int):
        self.dut = PageWalkCache(MMUConfig(pwc_entries=entries))
        self.ref = RefPWC(entries)
        self.seen = {"hit": 0, "miss": 0, "fill": 0, "flush": 0}

    async def lookup(self, ctx, vaddr, pcid):
        """Look up and commit; returns the level of the hit (Level) or None, checked against the reference."""
        lk = self.dut.lookup
        ctx.set(lk.vaddr, vaddr)
        ctx.set(lk.pcid, pcid)
        ctx.set(lk.commit, 1)
        hit = ctx.get(lk.hit)
        got = (Level(ctx.get(lk.entry.level)) - 1, ctx.get(lk.entry.base) << 12, ctx.get(lk.entry.rw),
               ctx.get(lk.entry.us), ctx.get(lk.entry.xd)) if hit else None
        await ctx.tick()
        ctx.set(lk.commit, 0)
        start = self.ref.lookup(vaddr, pcid)
        want = (start.level, start.table, start.writable, start.user, start.nx) if start else None
        assert got == want, f"lookup {vaddr:#x} pcid {pcid}: hw {got}, ref {want}"
        self.seen["hit" if hit else "miss"] += 1
        return Level(start.level + 1) if start else None

    async def fill(self, ctx, vaddr, pcid, nonleaf):
        """Insert ``nonleaf`` ((level, table, writable, user, nx), top-down), one per cycle."""
        f = self.dut.fill
        for level, table, w, u, x in nonleaf:
            ctx.set(f.en, 1)
            for k, v in dict(level=level, pcid=pcid, prefix=(vaddr >> 21) & ((1 << 27) - 1), base=table >> 12,
                             rw=w, us=u, xd=x).items():
                ctx.set(f.entry[k], v)
            await ctx.tick()
        ctx.set(f.en, 0)
        self.ref.fill(vaddr, pcid, [(lv, t, 0, w, u, x) for lv, t, w, u, x in nonleaf])
        self.seen["fill"] += len(nonleaf)

    async def flush(self, ctx, pcid=None):
        fl = self.dut.flush
        ctx.set(fl.en, 1)
        ctx.set(fl.match_pcid, pcid is not None)
        ctx.set(fl.pcid, pcid or 0)
        await ctx.tick()
        ctx.set(fl.en, 0)
        if pcid is None:
            self.ref.flush_all()
        else:
            self.ref.flush_pcid(pcid)
        self.seen["flush"] += 1


def entry(rng, level):
    return (level, rng.randrange(1, 1 << 28) << 12, rng.random() < 0.8, rng.random() < 0.8, rng.random() < 0.1)


@pytest.mark.parametrize("entries", [8, 4, 2, 16])
@pytest.mark.parametrize("seed", [1, 2])
def test_pwc_matches_reference(entries, seed):
    seed = seed * 7919 + entries
    rng = seeded(f"test_pwc_matches_reference[{entries}]", seed)
    b = Bench(entries)
    pcids = (0, 7, 0x2A5)

    async def testbench(ctx):
        for _ in range(200):
            if rng.random() < 0.04:
                await b.flush(ctx, rng.choice((None,) + pcids))
                continue
            vaddr = (rng.randrange(3) << 39 | rng.randrange(3) << 30 | rng.randrange(4) << 21
                     | rng.randrange(1 << 21))
            pcid = rng.choice(pcids)
            deepest = await b.lookup(ctx, vaddr, pcid)
            # the walk below the hit: levels from the one after the hit down to a random leaf (PT: none cached)
            first = (deepest or Level.PML4 + 1) - 1
            leaf = rng.randrange(1, first + 1) if first >= 1 else 1
            below = [entry(rng, Level(lv)) for lv in range(first, max(leaf, 1), -1) if lv >= Level.PD]
            if below and rng.random() < 0.8:
                await b.fill(ctx, vaddr, pcid, below)

    simulate(b.dut, testbench)
    assert min(b.seen.values()) >= 3, b.seen


def test_the_deepest_cached_level_answers():
    b = Bench(8)
    va = 1 << 39 | 2 << 30 | 3 << 21 | 0x1234

    async def testbench(ctx):
        assert await b.lookup(ctx, va, 5) is None
        await b.fill(ctx, va, 5, [(Level.PML4, 0x10_0000, 1, 1, 0), (Level.PDPT, 0x20_0000, 1, 0, 0),
                                  (Level.PD, 0x30_0000, 0, 0, 1)])
        assert await b.lookup(ctx, va, 5) == Level.PD
        assert await b.lookup(ctx, va ^ (1 << 21), 5) == Level.PDPT  # another PD index: the PDPTE
        assert await b.lookup(ctx, va ^ (1 << 30), 5) == Level.PML4  # another PDPT index: the PML4E
        assert await b.lookup(ctx, va, 6) is None  # PWC entries have no global bit

    simulate(b.dut, testbench)


def test_the_least_recently_used_entry_is_replaced():
    b = Bench(4)
    vas = [i << 39 for i in range(5)]

    async def testbench(ctx):
        for va in vas[:4]:
            await b.fill(ctx, va, 0, [(Level.PML4, 0x1000 * (1 + (va >> 39)), 1, 1, 0)])
        assert await b.lookup(ctx, vas[0], 0) == Level.PML4  # 0 is now the most recently used: 1 is the LRU
        await b.fill(ctx, vas[4], 0, [(Level.PML4, 0x9000, 1, 1, 0)])
        assert await b.lookup(ctx, vas[1], 0) is None
        for va in (vas[0], vas[2], vas[3], vas[4]):
            assert await b.lookup(ctx, va, 0) == Level.PML4

    simulate(b.dut, testbench)
