"""The MMU top in Amaranth's simulator against the reference MMU (model/reference/ref_mmu.py).

A fast, self-contained check of the hardware before the cocotb regression: random
page tables (every fault rule, 4K/2M/1G leaves, global pages, two address spaces),
a DRAM with random latency and ready drops, random response backpressure and
control operations at random times, including during walks.  The bench is
``sim.pysim.PySimBench`` and the checking is ``sim.scoreboard.Scoreboard``, the one
the cocotb testbench feeds: every response (here with its whole payload, also of a
fault), every memory read and write (address, value, order) and the counters are
compared with ``RefMMU``.  Ordering rule (hw/mmu.py): a control operation accepted
in cycle c belongs to request N ("during N") when N was accepted before c and
answered at or after c; otherwise it goes before the next request.

Run one seed by hand: ``python -m pytest tests/test_hw_mmu.py -k 'seed3'``.
"""

from __future__ import annotations

import random

import pytest

from model.config import PRESETS, DRAMTiming, MMUConfig, Policy, TLBConfig
from model.x86.pte import PS, RW, US, XD, A, Access, D, G, P
from model.x86.tlbflush import CR3_NOFLUSH, CtlOp
from sim.pysim import PySimBench
from sim.scoreboard import ScoreboardMismatch
from sim.transactions import CtlTxn, Flags, Request


class DictMem:
    """Sparse 64-bit-word memory (what the walker reads), as large as any MAXPHYADDR allows."""

    size = 1 << 52

    def __init__(self, words=None):
        self.words = dict(words or {})

    def read64(self, addr):
        return self.words.get(addr, 0)

    def write64(self, addr, value):
        self.words[addr] = value


def canonical(va):
    va &= (1 << 48) - 1
    return va | (0xFFFF << 48) if va >> 47 else va


class RandomTables:
    """Two address spaces over shared random tables; every fault rule shows up now and then."""

    def __init__(self, rng: random.Random, maxphyaddr: int, pool_pml4=(0, 1, 511), pool_pdpt=(0, 1, 2),
                 pool_pd=(0, 1, 2, 3), pool_pt=tuple(range(12))):
        self.rng, self.M = rng, maxphyaddr
        self.mem = DictMem()
        self.next_table = 0x10_0000
        self.vas = []
        self.leaf_addrs = []
        self.roots = [self._new_table(), self._new_table()]
        shared_pdpt = None
        for root_i, root in enumerate(self.roots):
            for i4 in pool_pml4:
                if root_i == 1 and i4 == 0 and shared_pdpt is not None:
                    self.mem.write64(root + 8 * i4, shared_pdpt)  # the same PDPT in both spaces
                    continue
                e4 = self._table_entry(level=4)
                self.mem.write64(root + 8 * i4, e4)
                if root_i == 0 and i4 == 0:
                    shared_pdpt = e4
                if not e4 & P:
                    for _ in range(2):
                        self.vas.append(canonical(i4 << 39 | rng.randrange(1 << 39) & ~7))
                    continue
                pdpt = e4 & self._amask()
                for i3 in pool_pdpt:
                    if rng.random() < 0.12:  # 1 GiB leaf
                        e3 = self._leaf(3)
                        self.mem.write64(pdpt + 8 * i3, e3)
                        for _ in range(3):
                            self.vas.append(canonical(i4 << 39 | i3 << 30 | rng.randrange(1 << 30)))
                        continue
                    e3 = self._table_entry(level=3)
                    self.mem.write64(pdpt + 8 * i3, e3)
                    if not e3 & P:
                        self.vas.append(canonical(i4 << 39 | i3 << 30 | rng.randrange(1 << 30)))
                        continue
                    pd = e3 & self._amask()
                    for i2 in pool_pd:
                        if rng.random() < 0.15:  # 2 MiB leaf
                            e2 = self._leaf(2)
                            self.mem.write64(pd + 8 * i2, e2)
                            for _ in range(3):
                                self.vas.append(canonical(i4 << 39 | i3 << 30 | i2 << 21 | rng.randrange(1 << 21)))
                            continue
                        e2 = self._table_entry(level=2)
                        self.mem.write64(pd + 8 * i2, e2)
                        pt = e2 & self._amask()
                        for i1 in pool_pt:
                            addr = pt + 8 * i1
                            self.mem.write64(addr, self._leaf(1))
                            self.leaf_addrs.append(addr)
                            self.vas.append(canonical(i4 << 39 | i3 << 30 | i2 << 21 | i1 << 12
                                                      | rng.randrange(4096)))

    def _amask(self):
        return ((1 << self.M) - 1) & ~0xFFF

    def _new_table(self):
        t = self.next_table
        self.next_table += 0x1000
        return t

    def _flags(self, leaf):
        r = self.rng
        v = P
        v |= RW if r.random() < 0.85 else 0
        v |= US if r.random() < 0.95 else 0
        v |= A if r.random() < 0.5 else 0
        v |= XD if r.random() < 0.08 else 0
        v |= (r.getrandbits(3) << 9) | (r.getrandbits(11) << 52)  # ignored bits
        if leaf:
            v |= D if r.random() < 0.4 else 0
            v |= G if r.random() < 0.2 else 0
        if r.random() < 0.03:
            v &= ~P
        if r.random() < 0.02 and self.M < 52:
            v |= 1 << r.randrange(self.M, 52)  # reserved
        return v

    def _table_entry(self, level):
        v = self._flags(leaf=False) | self._new_table()
        if level == 4 and self.rng.random() < 0.03:
            v |= PS  # reserved in a PML4E
        return v

    def _leaf(self, level):
        r = self.rng
        shift = {1: 12, 2: 21, 3: 30}[level]
        frame = r.randrange(1 << (self.M - shift)) << shift
        v = self._flags(leaf=True) | frame
        if level > 1:
            v |= PS
            if r.random() < 0.05:
                v |= 1 << r.randrange(13, shift)  # reserved low address bits of a huge page
            if r.random() < 0.3:
                v |= 1 << 12  # PAT: ignored
        elif r.random() < 0.3:
            v |= PS  # PAT in a PTE: ignored
        return v


class Harness:
    """One random co-simulation of the MMU top (Amaranth simulator) against RefMMU, through the scoreboard.

    The DRAM answers reads in order after 1..``max_latency + 1`` cycles and drops
    ``mem_req.ready`` at random; ``resp.ready`` is dropped at random; control
    operations arrive at random cycles (also during walks).  Every ``quiet_every``
    responses the driver lets the MMU drain, then flips a flag or a bit of a leaf
    entry (no flush: stale TLB entries must behave identically).  With ``p_reset``
    the MMU is reset at random cycles while a request is in flight: the DRAM
    forgets its queue and the reference starts afresh (with the memory as the
    hardware left it).
    """

    def __init__(self, cfg: MMUConfig, seed: int, n_requests: int = 300, *, p_ctl=0.012, p_resp_ready=0.8,
                 p_mem_ready=0.8, max_latency=4, quiet_every=40, working_set=24, p_reset=0.0):
        self.cfg, self.seed, self.n_requests = cfg, seed, n_requests
        self.p_ctl, self.quiet_every, self.working_set, self.p_reset = p_ctl, quiet_every, working_set, p_reset
        self.rng = rng = random.Random(seed)
        self.tables = RandomTables(rng, cfg.maxphyaddr)
        self.flags = dict(wp=rng.random() < 0.7, nxe=rng.random() < 0.7, smep=rng.random() < 0.3,
                          smap=rng.random() < 0.2, pcide=rng.random() < 0.6)
        self.pcids = (0x001, 0x2A5)
        self.recent: list[tuple[int, Access, bool]] = []
        self.resets = 0
        self.stats: dict = {}
        timing = DRAMTiming(latency=1, jitter=max_latency, ready_drop=1 - p_mem_ready)
        self.bench = PySimBench(cfg, self.tables.mem, seed=seed, flags=Flags(**self.flags), timing=timing,
                                resp_stall_prob=1 - p_resp_ready, whole_payload=True)

    # ---- stimulus -------------------------------------------------------------------------
    def cr3_value(self, space):
        return self.tables.roots[space] | self.pcids[space]

    def random_ctl(self) -> CtlTxn:
        rng, r = self.rng, self.rng.random()
        if r < 0.35:
            return CtlTxn(CtlOp.FLUSH_VA, rng.choice(self.tables.vas) & ((1 << 64) - 1))
        if r < 0.5:
            return CtlTxn(CtlOp.FLUSH_PCID, rng.choice(self.pcids))
        if r < 0.6:
            return CtlTxn(CtlOp.FLUSH_ALL, 0)
        if r < 0.7:
            return CtlTxn(CtlOp.FLUSH_ALL_KEEP_GLOBAL, 0)
        return CtlTxn(CtlOp.WRITE_CR3, self.cr3_value(rng.randrange(2)) | (CR3_NOFLUSH if rng.random() < 0.5 else 0))

    def random_req(self, n) -> Request:
        rng, id_mask = self.rng, (1 << self.cfg.id_bits) - 1
        if rng.random() < 0.02:  # non-canonical
            return Request(rng.getrandbits(64), Access(rng.randrange(3)), bool(rng.randrange(2)), n & id_mask)
        if self.recent and rng.random() < 0.75:
            # a drifting working set of accesses that translated, so that the TLBs hit
            va, access, user = rng.choice(self.recent)
        else:
            va = rng.choice(self.tables.vas)
            access = rng.choices((Access.READ, Access.WRITE, Access.FETCH), (5, 3, 2))[0]
            user = rng.random() < 0.7
        if rng.random() < 0.3:
            va = (va & ~0xFFF) | rng.randrange(4096)
        return Request(va, access, user, n & id_mask)

    # ---- the simulation ---------------------------------------------------------------------
    def run(self) -> dict:
        self.bench.run(self._bench)
        return self.stats

    async def _bench(self, b: PySimBench):
        rng, flags, n = self.rng, self.flags, self.n_requests
        pending_ctl = [CtlTxn(CtlOp.WRITE_CR3, self.cr3_value(0))]  # the first operation loads CR3
        offered_ctl = offered_req = None
        next_n = answered = 0
        quiet, quiet_since = False, 0
        limit = 200 * n
        while answered < n and b.cycle < limit:
            if self.p_reset and b.outstanding and rng.random() < self.p_reset:
                # a reset while a request is in flight: the reset MMU is a new MMU, memory keeps its writes
                await b.reset(Flags(**flags))
                offered_ctl = offered_req = None
                pending_ctl = [CtlTxn(CtlOp.WRITE_CR3, self.cr3_value(rng.randrange(2)))]
                self.resets += 1
                continue
            if quiet and not b.outstanding and offered_req is None and offered_ctl is None \
                    and b.cycle - quiet_since > 6:
                # nothing in flight: flip a flag or a bit of a leaf entry (no flush)
                if rng.random() < 0.5:
                    k = rng.choice(list(flags))
                    flags[k] = not flags[k]
                    b.set_flags(Flags(**flags))
                if self.tables.leaf_addrs and rng.random() < 0.7:
                    addr = rng.choice(self.tables.leaf_addrs)
                    mem = self.tables.mem
                    mem.write64(addr, mem.read64(addr) ^ rng.choice((RW, US, XD, P, D, A, G)))
                quiet = False
            if offered_req is None and not quiet and answered + len(b.outstanding) < n and rng.random() < 0.7:
                offered_req = self.random_req(next_n)
                next_n += 1
            if offered_ctl is None and not quiet:
                if pending_ctl:
                    offered_ctl = pending_ctl.pop(0)
                elif rng.random() < self.p_ctl:
                    offered_ctl = self.random_ctl()
            edge = await b.step(offered_req, offered_ctl)
            if edge.req_accepted:
                offered_req = None
            if edge.ctl_accepted:
                offered_ctl = None
            if edge.response is not None:
                answered += 1
                q = edge.request
                if edge.response.fault == 0 and (q.vaddr, q.access, q.user) not in self.recent:
                    self.recent.append((q.vaddr, q.access, q.user))
                    if len(self.recent) > self.working_set:
                        self.recent.pop(0)
                if answered % self.quiet_every == 0:
                    quiet, quiet_since = True, edge.cycle
        assert answered == n, f"seed {self.seed}: only {answered} of {n} requests answered in {b.cycle} cycles"
        b.finish()
        self.stats = dict(cycles=b.cycle, resets=self.resets, **b.counters())


def run_mmu(cfg: MMUConfig, seed: int, n_requests: int = 300, **kw) -> dict:
    """Drive ``n_requests`` random requests through the hardware and check each one against RefMMU."""
    return Harness(cfg, seed, n_requests, **kw).run()


# every preset the simulator runs in a few seconds (plru128x8 is for synthesis figures)
PYSIM_PRESETS = [name for name in PRESETS if name != "plru128x8"]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", PYSIM_PRESETS)
def test_mmu_matches_reference(name, seed):
    stats = run_mmu(PRESETS[name], seed=seed * 7919 + len(name), n_requests=200)
    assert stats["hits"] > 0 and stats["walks"] > 0 and stats["faults"] > 0


@pytest.mark.parametrize("name", ["default", "fifo64x4", "tiny_m52"])
def test_reset_in_the_middle_of_walks_leaves_a_clean_state(name):
    stats = run_mmu(PRESETS[name], seed=99, n_requests=250, p_reset=0.004)
    assert stats["resets"] > 0


# ---- directed timing ---------------------------------------------------------------------------

VA = 0x0000_1234_5678_9000
FRAME = 0x00AB_CDE0_0000
ALL = P | RW | US | A


def simple_tables(va=VA, frame=FRAME, leaf_extra=D):
    """PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000: one 4 KiB page, A (and D) already set."""
    mem = DictMem()
    idx = [(va >> s) & 0x1FF for s in (39, 30, 21, 12)]
    for level, (table, nxt) in enumerate(((0x1000, 0x2000), (0x2000, 0x3000), (0x3000, 0x4000))):
        mem.write64(table + 8 * idx[level], nxt | ALL)
    mem.write64(0x4000 + 8 * idx[3], frame | ALL | leaf_extra)
    return mem


class Directed:
    """Cycle-by-cycle driver for timing checks: DRAM with a fixed latency, ready always high, and a log
    of (cycle, event, detail).  With ``check`` the scoreboard compares every response with RefMMU."""

    def __init__(self, cfg, mem, latency, *, flags=Flags(wp=True, nxe=True), check=False):
        self.bench = PySimBench(cfg, mem, flags=flags, timing=DRAMTiming(latency=latency), check=check)
        self.id_mask = (1 << cfg.id_bits) - 1
        self.log = []  # (cycle, event, detail)

    @property
    def cycle(self):
        return self.bench.cycle

    def run(self, script):
        async def bench(b):
            await script(self)
            if b.scoreboard:
                b.finish()

        self.bench.run(bench)
        return self.log

    async def step(self, req=None, ctl=None):
        """One clock cycle offering ``req`` = (vaddr, access[, user]) and ``ctl`` = (op, value); returns
        (request accepted, control operation accepted, the response or None)."""
        request = None
        if req is not None:
            va, access, *user = req
            request = Request(va, Access(access), bool(user[0]) if user else True, self.cycle & self.id_mask)
        edge = await self.bench.step(request, None if ctl is None else CtlTxn(CtlOp(ctl[0]), ctl[1]))
        for op in edge.mem:
            self.log.append((edge.cycle, "write" if op.write else "read", op.addr))
        if edge.response is not None:
            self.log.append((edge.cycle, "resp", edge.response.tlb_hit))
        if edge.req_accepted:
            self.log.append((edge.cycle, "accept", req[0]))
        if edge.ctl_accepted:
            self.log.append((edge.cycle, "ctl", int(ctl[0])))
        return edge.req_accepted, edge.ctl_accepted, edge.response

    def counter(self, name):
        return self.bench.counters()[name]


@pytest.mark.parametrize("latency", [1, 3])
def test_walk_timing_then_back_to_back_hits(latency):
    """A cold miss: CR3 load, then 4 levels of (READ + latency) cycles; then hits answer on the cycle
    after their request, one request accepted per cycle."""
    d = Directed(MMUConfig(pwc_entries=0), simple_tables(), latency)
    out = {}

    async def script(d):
        took = False
        while not took:
            _, took, _ = await d.step(ctl=(CtlOp.WRITE_CR3, 0x1000))
        took = False
        while not took:
            took, _, _ = await d.step(req=(VA, Access.READ))
        t0 = d.cycle - 1
        resp = None
        while resp is None:
            _, _, resp = await d.step()
        out["miss_latency"] = d.cycle - 1 - t0
        out["miss"] = resp
        out["walk_cycles"] = d.counter("walk_cycles")
        while not (await d.step(req=(VA + 8, Access.READ)))[0]:  # wait for the fill to finish
            pass
        hits = []
        for k in range(8):
            took, _, resp = await d.step(req=(VA + 16 * k, Access.READ))
            hits.append((took, resp and resp.tlb_hit, resp and resp.paddr))
        out["hits"] = hits

    d.run(script)
    per_level = latency + 1
    assert not out["miss"].tlb_hit and out["miss"].paddr == FRAME
    assert out["miss_latency"] == 3 + 4 * per_level
    assert out["walk_cycles"] == 4 * per_level + 1
    reads = [c for c, e, _ in d.log if e == "read"]
    assert [b - a for a, b in zip(reads, reads[1:])] == [per_level] * 3
    # every cycle: the previous request answered (a hit) and a new one accepted
    assert all(took for took, _, _ in out["hits"])
    assert [(h, p) for _, h, p in out["hits"]] == [(1, FRAME + 8)] + [(1, FRAME + 16 * k) for k in range(7)]


def test_flush_va_acknowledged_in_its_second_cycle():
    d = Directed(MMUConfig(), simple_tables(), 2)
    out = {}

    async def script(d):
        await d.step(ctl=(CtlOp.WRITE_CR3, 0x1000))
        took = False
        while not took:
            took, _, _ = await d.step(req=(VA, Access.READ))
        while (await d.step())[2] is None:
            pass
        for _ in range(4):
            await d.step()
        first = await d.step(ctl=(CtlOp.FLUSH_VA, VA))
        second = await d.step(ctl=(CtlOp.FLUSH_VA, VA))
        out["acks"] = (first[1], second[1])
        took = False
        while not took:
            took, _, _ = await d.step(req=(VA, Access.READ))
        resp = None
        while resp is None:
            _, _, resp = await d.step()
        out["after"] = resp

    d.run(script)
    assert out["acks"] == (False, True)
    assert not out["after"].tlb_hit  # the entry is gone


# ---- directed scenarios, one operation at a time, against the reference -------------------------

class Lockstep:
    """Sequential driver: each operation completes (ack or response) before the next; the scoreboard
    compares every response, memory access and, at the end, the counters with RefMMU."""

    def __init__(self, cfg: MMUConfig, mem: DictMem, flags: dict, latency: int = 2):
        self.d = Directed(cfg, mem, latency, flags=Flags(**flags), check=True)

    async def ctl(self, op, value):
        while not (await self.d.step(ctl=(op, value)))[1]:
            pass

    async def translate(self, va, access, user=1):
        d = self.d
        while not (await d.step(req=(va, access, user)))[0]:
            pass
        resp = None
        while resp is None:
            _, _, resp = await d.step()
        for _ in range(4):  # let the fill finish
            await d.step()
        return resp

    def run(self, script):
        self.d.run(lambda d: script(self))


def two_spaces():
    """Space A (PML4 0x1000) maps VA non-global to frame A; space B (PML4 0x11000) maps it global to frame B."""
    mem = simple_tables(VA, 0x1111_1000, leaf_extra=0)
    idx = [(VA >> s) & 0x1FF for s in (39, 30, 21, 12)]
    for level, (table, nxt) in enumerate(((0x11000, 0x12000), (0x12000, 0x13000), (0x13000, 0x14000))):
        mem.write64(table + 8 * idx[level], nxt | ALL)
    mem.write64(0x14000 + 8 * idx[3], 0x2222_2000 | ALL | G)
    return mem


@pytest.mark.parametrize("dtlb", [TLBConfig(4, 4, Policy.LRU, 2), TLBConfig(8, 2, Policy.FIFO, 2)])
def test_duplicate_matches_priority_and_fill_in_place(dtlb):
    """A page non-global in PCID 1 and global in PCID 2: back in PCID 1 both entries match (lowest way
    wins); a write to the clean winner invalidates it and the walk's fill replaces the other match in place."""
    cfg = MMUConfig(dtlb=dtlb)
    ls = Lockstep(cfg, two_spaces(), dict(wp=True, nxe=True, smep=False, smap=False, pcide=True))

    async def script(ls):
        await ls.ctl(CtlOp.WRITE_CR3, 0x1000 | 1)
        assert (await ls.translate(VA, Access.READ)).paddr == 0x1111_1000
        await ls.ctl(CtlOp.WRITE_CR3, 0x11000 | 2 | CR3_NOFLUSH)
        assert (await ls.translate(VA, Access.READ)).paddr == 0x2222_2000
        await ls.ctl(CtlOp.WRITE_CR3, 0x1000 | 1 | CR3_NOFLUSH)
        r = await ls.translate(VA, Access.READ)
        assert (r.tlb_hit, r.paddr) == (True, 0x1111_1000)  # two matches: way 0 (PCID 1) wins
        await ls.translate(VA, Access.WRITE)  # clean: invalidated, walks, fills in place of the global one
        await ls.translate(VA, Access.WRITE)
        await ls.ctl(CtlOp.WRITE_CR3, 0x11000 | 2 | CR3_NOFLUSH)
        await ls.translate(VA, Access.READ)  # the global entry is gone: walks again
        await ls.translate(VA, Access.READ)
        await ls.ctl(CtlOp.FLUSH_VA, VA)  # global and PCID 2 entries for VA
        await ls.translate(VA, Access.READ)

    ls.run(script)


def test_the_scoreboard_catches_a_flush_the_reference_never_heard_of():
    """The checker can fail: the hardware flushes VA, the reference (fault injection) does not, so it
    predicts a TLB hit where the hardware walks."""
    ls = Lockstep(MMUConfig(), simple_tables(), dict(wp=True, nxe=True, smep=False, smap=False, pcide=False))
    ls.d.bench.scoreboard.drop_ctl_op = CtlOp.FLUSH_VA

    async def script(ls):
        await ls.ctl(CtlOp.WRITE_CR3, 0x1000)
        await ls.translate(VA, Access.READ)
        await ls.ctl(CtlOp.FLUSH_VA, VA)
        await ls.translate(VA, Access.READ)

    with pytest.raises(ScoreboardMismatch, match=r"MISMATCH \(tlb_hit, walk reads"):
        ls.run(script)
