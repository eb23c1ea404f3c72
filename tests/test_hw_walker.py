"""hw/walker.py alone in Amaranth's simulator, against the reference walker (model/reference/ref_walker.py).

The walker talks to a mock DRAM (random latency, random ``mem_req.ready`` drops) over random page tables
that show every rule of docs/reference.md "The walk": not-present entries, reserved bits (M..51, XD with
NXE off, PS in a PML4E, the low address bits of huge leaves), 4K/2M/1G leaves, every permission bit, A/D
bits set or clear.  The mock page-walk cache answers the start cycle with a real non-leaf entry of the
walk's path now and then, so the walk starts below PML4 with the cached rights.  For every walk the test
compares, with ``ref_walker.walk``: fault and error code, paddr, size, frame, combined rights, dirty,
global, the addresses read in order, the A/D writes in order, and the page-walk-cache inserts after a
commit (level, base, prefix, PCID, rights, top-down).  The directed cases check the timing that
docs/hardware.md ("Timing") gives.
"""

from __future__ import annotations

import pytest

from hw.walker import Walker
from model.config import MMUConfig
from model.reference.ref_walker import ControlRegs, WalkStart, walk
from model.x86.physmem import PhysMem
from model.x86.pte import PS, RW, US, XD, A, Access, D, FaultKind, G, Level, P
from tests.hwsim import MockDRAM, seeded, simulate

_SHIFT = {4: 39, 3: 30, 2: 21, 1: 12}


class LazyTables(PhysMem):
    """Page tables in the model's physical memory, generated as the walks read them: each entry is drawn
    the first time it is read."""

    def __init__(self, rng, maxphyaddr):
        super().__init__(64 << 20)
        self.drawn = set()
        self.rng, self.M = rng, maxphyaddr
        self.level_of = {}  # table base -> level of its entries
        self.next_table = 0x10_0000
        self.root = self.new_table(4)

    def new_table(self, level):
        base = self.next_table
        self.next_table += 0x1000
        self.level_of[base] = level
        return base

    def read64(self, addr):
        if addr not in self.drawn:
            self.drawn.add(addr)
            self.write64(addr, self.entry(self.level_of.get(addr & ~0xFFF, 1)))
        return super().read64(addr)

    def entry(self, level):
        r = self.rng
        v = (P if r.random() < 0.97 else 0) | (RW if r.random() < 0.9 else 0) | (US if r.random() < 0.95 else 0)
        v |= (A if r.random() < 0.5 else 0) | (XD if r.random() < 0.05 else 0)
        v |= r.getrandbits(3) << 9 | r.getrandbits(11) << 52  # ignored bits
        if r.random() < 0.015 and self.M < 52:
            v |= 1 << r.randrange(self.M, 52)  # reserved
        leaf = level == 1 or (level in (2, 3) and r.random() < 0.2)
        if level == 4 and r.random() < 0.015:
            v |= PS  # reserved in a PML4E
        if not leaf:
            return v | self.new_table(level - 1)
        v |= (D if r.random() < 0.4 else 0) | (G if r.random() < 0.2 else 0)
        shift = _SHIFT[level]
        v |= r.randrange(1 << (self.M - shift)) << shift
        if level > 1:
            v |= PS | (1 << 12 if r.random() < 0.3 else 0)  # bit 12 is PAT: ignored
            if r.random() < 0.05:
                v |= 1 << r.randrange(13, shift)  # reserved low address bits of a huge page
        elif r.random() < 0.3:
            v |= PS  # PAT in a PTE: ignored
        return v

    def random_vaddr(self):
        r = self.rng
        va = (r.choice((0, 1, 511)) << 39 | r.randrange(4) << 30 | r.randrange(4) << 21 | r.randrange(8) << 12
              | r.randrange(4096))
        return va | (0xFFFF << 48 if va >> 47 else 0)


class Bench:
    """Drives one Walker: start, mock DRAM and mock page-walk cache, commit or release."""

    def __init__(self, cfg, rng, mem, *, p_ready=0.8, max_latency=4, latency=None):
        self.cfg, self.rng, self.mem = cfg, rng, mem
        self.p_ready, self.max_latency, self.latency = p_ready, max_latency, latency
        self.dut = Walker(cfg)

    async def run_walk(self, ctx, *, vaddr, access, user, ctrl, cached=None, commit=True):
        """One walk; returns (cycles from start to done, result dict, reads, writes, PWC inserts)."""
        dut, rng, mem, M = self.dut, self.rng, self.mem, self.cfg.maxphyaddr
        for k in ("wp", "nxe", "smep", "smap", "pcide"):
            ctx.set(dut.flags[k], getattr(ctrl, k))
        w = dut.walk
        ctx.set(w.vaddr, vaddr & ((1 << 48) - 1))
        ctx.set(w.access, access)
        ctx.set(w.user, user)
        ctx.set(w.pml4, ctrl.pml4_base(M) >> 12)
        ctx.set(w.pcid, ctrl.pcid)
        ctx.set(w.start, 1)
        ctx.set(dut.pwc_lookup.hit, cached is not None)
        if cached is not None:
            level, table, rw, us, xd = cached
            for k, v in dict(level=level, base=table >> 12, rw=rw, us=us, xd=xd).items():
                ctx.set(dut.pwc_lookup.entry[k], v)
        assert ctx.get(dut.pwc_lookup.commit) == 1
        assert ctx.get(dut.pwc_lookup.vaddr) == vaddr & ((1 << 48) - 1) and ctx.get(dut.pwc_lookup.pcid) == ctrl.pcid
        assert ctx.get(w.pwc_hit) == (cached is not None)
        await ctx.tick()
        ctx.set(w.start, 0)
        ctx.set(dut.pwc_lookup.hit, 0)
        dram, cycles = MockDRAM(rng, mem, p_ready=self.p_ready, max_latency=self.max_latency), 1
        if self.latency is not None:
            dram.latency = lambda: self.latency
        while not ctx.get(w.done):
            dram.step(ctx, dut.mem_req, dut.mem_resp, cycles)
            await ctx.tick()
            cycles += 1
            assert cycles < 500, "the walk never finished"
        dram.idle(ctx, dut.mem_req, dut.mem_resp)
        reads, writes = dram.reads, dram.writes
        result = {k: ctx.get(w.result[k]) for k in ("fault", "paddr", "size", "frame", "rw", "us", "nx", "dirty",
                                                     "global_")}
        result["error_code"] = ctx.get(w.result.error_code.as_value())
        inserts = []
        ctx.set(w.commit if commit else w.release, 1)
        await ctx.tick()
        ctx.set(w.commit, 0)
        ctx.set(w.release, 0)
        if commit:
            while True:
                if ctx.get(dut.pwc_fill.en):
                    e = dut.pwc_fill.entry
                    inserts.append((ctx.get(e.level), ctx.get(e.base) << 12, ctx.get(e.rw), ctx.get(e.us),
                                    ctx.get(e.xd), ctx.get(e.prefix), ctx.get(e.pcid)))
                last = ctx.get(w.fill_last)
                await ctx.tick()
                if last:
                    break
                assert len(inserts) <= 3, "more PWC inserts than non-leaf levels"
        assert not ctx.get(w.done)  # back in IDLE
        return cycles, result, reads, writes, inserts


def expected(mem, ctrl, vaddr, access, user, M, cached):
    start = None
    if cached is not None:
        level, table, rw, us, xd = cached
        start = WalkStart(Level(level - 1), table, bool(rw), bool(us), bool(xd))
    return walk(mem, ctrl, vaddr, access, user, maxphyaddr=M, start=start, apply=False)


def check_walk(got, ref, vaddr, ctrl, cfg, committed):
    _, res, reads, writes, inserts = got
    where = f"vaddr {vaddr:#x} ctrl {ctrl}"
    assert reads == [a for _, a, _ in ref.reads], where
    assert writes == ref.writes, where
    assert res["fault"] == (ref.fault == FaultKind.PAGE), where
    assert res["error_code"] == ref.error_code, where
    if ref.fault == FaultKind.NONE:
        assert (res["paddr"], res["size"], res["frame"] << 12) == (ref.paddr, ref.size, ref.frame), where
        assert (res["rw"], res["us"], res["nx"]) == (ref.writable, ref.user, ref.nx), where
        assert (res["dirty"], res["global_"]) == (ref.dirty, ref.global_), where
    if committed and cfg.pwc_entries:
        prefix = (vaddr >> 21) & ((1 << 27) - 1)
        assert inserts == [(int(lv), table, w, u, x, prefix, ctrl.pcid) for lv, table, _v, w, u, x in ref.nonleaf], where
    else:
        assert inserts == [], where


def random_ctrl(rng, mem):
    pcide = rng.random() < 0.5
    return ControlRegs(cr3=mem.root | (rng.randrange(1 << 12) if pcide else 0), wp=rng.random() < 0.7,
                       nxe=rng.random() < 0.7, smep=rng.random() < 0.15, smap=rng.random() < 0.15, pcide=pcide)


@pytest.mark.parametrize("maxphyaddr", [40, 52, 32])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_walker_matches_reference_walk(seed, maxphyaddr):
    seed = seed * 1009 + maxphyaddr
    rng = seeded("test_walker_matches_reference_walk", seed)
    cfg = MMUConfig(maxphyaddr=maxphyaddr)
    mem = LazyTables(rng, maxphyaddr)
    bench = Bench(cfg, rng, mem)
    seen = {"faults": 0, "ok": 0, "cached": 0, "ad": 0}

    async def testbench(ctx):
        for _ in range(80):
            vaddr, ctrl = mem.random_vaddr(), random_ctrl(rng, mem)
            access, user = rng.choice(list(Access)), rng.random() < 0.7
            cached = None
            full = expected(mem, ctrl, vaddr, access, user, maxphyaddr, None)
            if full.nonleaf and rng.random() < 0.5:
                level, table, _v, w, u, x = rng.choice(full.nonleaf)
                cached = (int(level), table, w, u, x)
            ref = expected(mem, ctrl, vaddr, access, user, maxphyaddr, cached)
            commit = ref.fault == FaultKind.NONE and rng.random() < 0.8
            got = await bench.run_walk(ctx, vaddr=vaddr, access=access, user=user, ctrl=ctrl, cached=cached,
                                       commit=commit)
            check_walk(got, ref, vaddr, ctrl, cfg, commit)
            seen["faults" if ref.fault != FaultKind.NONE else "ok"] += 1
            seen["cached"] += cached is not None
            seen["ad"] += bool(ref.writes)

    simulate(bench.dut, testbench)
    assert min(seen.values()) >= 3, seen  # the random tables reached every kind of walk


def fixed_tables(leaf_level, *, accessed):
    """One path PML4 -> ... -> leaf at ``leaf_level`` for vaddr 0x4020_1000 (P, RW, US on every level)."""
    mem = PhysMem(1 << 20)
    flags = P | RW | US | (A if accessed else 0)
    table, va = 0x1000, 0x4020_1000
    for level in (4, 3, 2, 1):
        addr = table + 8 * ((va >> _SHIFT[level]) & 0x1FF)
        if level == leaf_level:
            frame = 0x7654_3000 & ~((1 << _SHIFT[level]) - 1)
            mem.write64(addr, flags | frame | (PS if level > 1 else 0))
            return mem, va, addr
        table += 0x1000
        mem.write64(addr, flags | table)


@pytest.mark.parametrize("latency", [1, 3])
@pytest.mark.parametrize("leaf_level, accessed", [(1, True), (1, False), (2, True), (3, False)])
def test_walk_timing_is_n_levels_times_latency_plus_one_plus_writes(latency, leaf_level, accessed):
    """docs/hardware.md, Timing: n levels read and w A/D writes take n(L + 1) + w + 1 cycles from the
    start cycle to ``done`` with ``mem_req.ready`` always high and a DRAM answering L cycles after each
    read's handshake; a read access writes A only where it is clear."""
    cfg = MMUConfig(pwc_entries=0)
    mem, va, _ = fixed_tables(leaf_level, accessed=accessed)
    ctrl = ControlRegs(cr3=0x1000)
    bench = Bench(cfg, seeded("timing", 0), mem, p_ready=1.0, latency=latency)
    ref = walk(mem, ctrl, va, Access.READ, False, start=None, apply=False)
    n, w = len(ref.reads), len(ref.writes)
    assert n == 5 - leaf_level and w == (0 if accessed else n)

    async def testbench(ctx):
        got = await bench.run_walk(ctx, vaddr=va, access=Access.READ, user=False, ctrl=ctrl, commit=False)
        check_walk(got, ref, va, ctrl, cfg, committed=False)
        assert got[0] == n * (latency + 1) + w + 1

    simulate(bench.dut, testbench)


def test_a_faulting_walk_writes_nothing_and_fills_nothing():
    """docs/reference.md: a walk that ends in a fault makes no A/D write; the PTE here lacks A and U/S."""
    cfg = MMUConfig()
    mem, va, pte_addr = fixed_tables(1, accessed=False)
    mem.write64(pte_addr, mem.read64(pte_addr) & ~US)  # supervisor page, user access: protection fault
    ctrl = ControlRegs(cr3=0x1000)
    bench = Bench(cfg, seeded("fault", 0), mem)
    ref = walk(mem, ctrl, va, Access.WRITE, True, apply=False)
    assert ref.fault == FaultKind.PAGE and ref.writes == []

    async def testbench(ctx):
        got = await bench.run_walk(ctx, vaddr=va, access=Access.WRITE, user=True, ctrl=ctrl, commit=True)
        check_walk(got, ref, va, ctrl, cfg, committed=False)  # nothing inserted although committed

    simulate(bench.dut, testbench)
