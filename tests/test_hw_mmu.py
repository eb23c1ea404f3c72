"""The MMU top in Amaranth's Python simulator against the reference MMU (model/reference/ref_mmu.py).

A fast, self-contained check of the hardware before the cocotb regression: random
page tables (every fault rule, 4K/2M/1G leaves, global pages, two address spaces),
a DRAM with random latency and ready drops, random response backpressure and
control operations at random times, including during walks.  Every response,
every memory read and write (address, value, order) and the counters are compared
with ``RefMMU``.  Ordering rule (hw/mmu.py): a control operation accepted in
cycle c belongs to request N ("during N") when N was accepted before c and
answered at or after c; otherwise it goes before the next request.

Run one seed by hand: ``python -m pytest tests/test_hw_mmu.py -k 'seed3'``.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import pytest
from amaranth import ClockDomain, Module
from amaranth.sim import Simulator

from hw.mmu import MMU
from model.config import PRESETS, MMUConfig, Policy, TLBConfig
from model.reference.ref_mmu import RefMMU
from model.reference.ref_walker import ControlRegs
from model.x86.pte import PS, RW, US, XD, A, Access, D, G, P
from model.x86.tlbflush import CR3_NOFLUSH, CtlOp


class DictMem:
    """Sparse 64-bit-word memory (what the walker reads)."""

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


@dataclass
class Req:
    n: int
    vaddr: int
    access: int
    user: int
    id: int
    accepted: int = -1
    answered: int = -1
    resp: dict | None = None
    reads: list = field(default_factory=list)
    writes: list = field(default_factory=list)


RESP_FIELDS = ("paddr", "fault", "error_code", "size", "tlb_hit", "id")


class Harness:
    """One random co-simulation of the MMU top (Amaranth simulator) against RefMMU.

    The DRAM answers reads in order after 1..``max_latency + 1`` cycles and drops
    ``mem_req.ready`` at random; ``resp.ready`` is dropped at random; control
    operations arrive at random cycles (also during walks).  Every ``quiet_every``
    responses the driver lets the MMU drain, then flips a flag or a bit of a leaf
    entry in both memories (no flush: stale TLB entries must behave identically).
    With ``p_reset`` the MMU is reset at random cycles while a request is in
    flight: the DRAM forgets its queue and the reference starts afresh (with the
    memory as the hardware left it).
    """

    def __init__(self, cfg: MMUConfig, seed: int, n_requests: int = 300, *, p_ctl=0.012, p_resp_ready=0.8,
                 p_mem_ready=0.8, max_latency=4, quiet_every=40, working_set=24, p_reset=0.0, verbose=False):
        self.cfg, self.seed, self.n_requests = cfg, seed, n_requests
        self.p_ctl, self.p_resp_ready, self.p_mem_ready = p_ctl, p_resp_ready, p_mem_ready
        self.max_latency, self.quiet_every, self.working_set = max_latency, quiet_every, working_set
        self.p_reset, self.verbose = p_reset, verbose
        self.rng = rng = random.Random(seed)
        self.tables = RandomTables(rng, cfg.maxphyaddr)
        self.hw_mem = DictMem(self.tables.mem.words)
        self.flags = dict(wp=rng.random() < 0.7, nxe=rng.random() < 0.7, smep=rng.random() < 0.3,
                          smap=rng.random() < 0.2, pcide=rng.random() < 0.6)
        self.pcids = (0x001, 0x2A5)
        self.recent: list[tuple[int, int, int]] = []
        self.failures: list[str] = []
        self.resets = 0
        self.stats: dict = {}
        self._fresh_reference()
        self.dut = MMU(cfg)

    # ---- the reference side -------------------------------------------------------------
    def _fresh_reference(self):
        self.ref_mem = DictMem(self.hw_mem.words)
        self.ref = RefMMU(self.cfg, self.ref_mem, ControlRegs(cr3=0, **self.flags))
        self.reqs: list[Req] = []
        self.ctl_log: list[tuple[int, int, int]] = []  # (cycle accepted, op, value)
        self.ref_pos = self.ctl_pos = 0

    def feed_reference(self):
        """Give the reference every answered request, with the control operations in hardware order."""
        reqs, ctl_log, ref = self.reqs, self.ctl_log, self.ref
        while self.ref_pos < len(reqs) and reqs[self.ref_pos].answered >= 0:
            q = reqs[self.ref_pos]
            before, during = [], []
            while self.ctl_pos < len(ctl_log) and ctl_log[self.ctl_pos][0] <= q.answered:
                c, op, value = ctl_log[self.ctl_pos]
                (during if c > q.accepted else before).append((op, value))
                self.ctl_pos += 1
            for op, value in before:
                ref.ctl(op, value)
                if self.verbose:
                    print(f"  ctl {CtlOp(op).name} {value:#x}")
            exp = ref.translate(q.vaddr, Access(q.access), bool(q.user), q.id, flushes_during_walk=during)
            got = q.resp
            want = dict(paddr=exp.paddr, fault=int(exp.fault), error_code=exp.error_code, size=int(exp.size),
                        tlb_hit=int(exp.tlb_hit), id=exp.id)
            w_reads = [a for _, a, _ in exp.walk.reads] if exp.walk else []
            w_writes = list(exp.walk.writes) if exp.walk else []
            if self.verbose:
                print(f"#{q.n} acc@{q.accepted} ans@{q.answered} {q.vaddr:#x} {Access(q.access).name} u={q.user}"
                      f" during={during} hw={got} reads={[hex(a) for a in q.reads]} ref_pwc={exp.pwc_hit}")
            if got != want or q.reads != w_reads or q.writes != w_writes:
                self.failures.append(
                    f"seed {self.seed} request #{q.n} vaddr={q.vaddr:#x} access={Access(q.access).name} "
                    f"user={q.user} flags={self.flags} (control ops during it: {during})\n"
                    f"  hw : {got} reads={[hex(a) for a in q.reads]} "
                    f"writes={[(hex(a), hex(v)) for a, v in q.writes]}\n"
                    f"  ref: {want} reads={[hex(a) for a in w_reads]} "
                    f"writes={[(hex(a), hex(v)) for a, v in w_writes]}")
            self.ref_pos += 1

    # ---- stimulus -------------------------------------------------------------------------
    def cr3_value(self, space):
        return self.tables.roots[space] | self.pcids[space]

    def random_ctl(self):
        rng, r = self.rng, self.rng.random()
        if r < 0.35:
            return CtlOp.FLUSH_VA, rng.choice(self.tables.vas) & ((1 << 64) - 1)
        if r < 0.5:
            return CtlOp.FLUSH_PCID, rng.choice(self.pcids)
        if r < 0.6:
            return CtlOp.FLUSH_ALL, 0
        if r < 0.7:
            return CtlOp.FLUSH_ALL_KEEP_GLOBAL, 0
        return CtlOp.WRITE_CR3, self.cr3_value(rng.randrange(2)) | (CR3_NOFLUSH if rng.random() < 0.5 else 0)

    def random_req(self, n):
        rng, id_mask = self.rng, (1 << self.cfg.id_bits) - 1
        if rng.random() < 0.02:
            return Req(n, rng.getrandbits(64), rng.randrange(3), rng.randrange(2), n & id_mask)  # non-canonical
        if self.recent and rng.random() < 0.75:
            # a drifting working set of accesses that translated, so that the TLBs hit
            va, access, user = rng.choice(self.recent)
        else:
            va = rng.choice(self.tables.vas)
            access = int(rng.choices((Access.READ, Access.WRITE, Access.FETCH), (5, 3, 2))[0])
            user = int(rng.random() < 0.7)
        if rng.random() < 0.3:
            va = (va & ~0xFFF) | rng.randrange(4096)
        return Req(n, va, access, user, n & id_mask)

    # ---- the simulation ---------------------------------------------------------------------
    def run(self) -> dict:
        top = Module()
        top.domains.sync = cd = ClockDomain("sync")
        top.submodules.mmu = self.dut
        self.rst = cd.rst
        sim = Simulator(top)
        sim.add_clock(1e-8)
        sim.add_testbench(self._bench)
        sim.run()
        assert not self.failures, "\n".join(self.failures[:3])
        return self.stats

    def _idle_inputs(self, ctx):
        dut = self.dut
        for s in (dut.req.valid, dut.ctl.valid, dut.resp.ready, dut.mem_req.ready, dut.mem_resp.valid):
            ctx.set(s, 0)

    async def _bench(self, ctx):
        dut, rng, flags = self.dut, self.rng, self.flags
        for k, v in flags.items():
            ctx.set(getattr(dut.flags, k), int(v))
        pending_ctl = [(CtlOp.WRITE_CR3, self.cr3_value(0))]  # the first operation loads CR3
        offered_ctl = offered_req = None
        next_n = 0
        outstanding: deque[Req] = deque()  # accepted, not answered
        reads_q: deque = deque()  # (due cycle, data)
        quiet, quiet_since = False, 0
        cycle = answered = 0
        limit = 200 * self.n_requests

        while answered < self.n_requests and not self.failures and cycle < limit:
            # ---- a reset while a request is in flight
            if self.p_reset and outstanding and rng.random() < self.p_reset:
                self._idle_inputs(ctx)
                ctx.set(self.rst, 1)
                await ctx.tick()
                ctx.set(self.rst, 0)
                cycle += 1
                self.feed_reference()
                self.hw_mem = DictMem(self.hw_mem.words)
                self._fresh_reference()  # the reset MMU is a new MMU; memory keeps what the hardware wrote
                outstanding.clear()
                reads_q.clear()
                offered_ctl = offered_req = None
                pending_ctl = [(CtlOp.WRITE_CR3, self.cr3_value(rng.randrange(2)))]
                self.resets += 1
                continue
            # ---- choose this cycle's inputs
            if quiet and not outstanding and offered_req is None and offered_ctl is None \
                    and cycle - quiet_since > 6:
                # nothing in flight: flip a flag or a bit of a leaf entry (both memories, no flush)
                self.feed_reference()
                if rng.random() < 0.5:
                    k = rng.choice(list(flags))
                    flags[k] = not flags[k]
                    ctx.set(getattr(dut.flags, k), int(flags[k]))
                    self.ref.set_flags(**{k: flags[k]})
                if self.tables.leaf_addrs and rng.random() < 0.7:
                    addr = rng.choice(self.tables.leaf_addrs)
                    new = self.hw_mem.read64(addr) ^ rng.choice((RW, US, XD, P, D, A, G))
                    self.hw_mem.write64(addr, new)
                    self.ref_mem.write64(addr, new)
                quiet = False
            if offered_req is None and not quiet and answered + len(outstanding) < self.n_requests \
                    and rng.random() < 0.7:
                offered_req = self.random_req(next_n)
                next_n += 1
            if offered_ctl is None and not quiet:
                if pending_ctl:
                    offered_ctl = pending_ctl.pop(0)
                elif rng.random() < self.p_ctl:
                    offered_ctl = self.random_ctl()
            ctx.set(dut.req.valid, offered_req is not None)
            if offered_req is not None:
                ctx.set(dut.req.payload.vaddr, offered_req.vaddr)
                ctx.set(dut.req.payload.access, offered_req.access)
                ctx.set(dut.req.payload.user, offered_req.user)
                ctx.set(dut.req.payload.id, offered_req.id)
            ctx.set(dut.ctl.valid, offered_ctl is not None)
            if offered_ctl is not None:
                ctx.set(dut.ctl.payload.op, int(offered_ctl[0]))
                ctx.set(dut.ctl.payload.value, offered_ctl[1])
            resp_ready = rng.random() < self.p_resp_ready
            ctx.set(dut.resp.ready, resp_ready)
            mem_ready = rng.random() < self.p_mem_ready
            ctx.set(dut.mem_req.ready, mem_ready)
            head = reads_q[0] if reads_q and reads_q[0][0] <= cycle else None
            ctx.set(dut.mem_resp.valid, head is not None)
            if head is not None:
                ctx.set(dut.mem_resp.payload.rdata, head[1])

            # ---- the handshakes of this cycle
            if ctx.get(dut.resp.valid) and resp_ready:
                if not outstanding:
                    self.failures.append(f"seed {self.seed}: a response at cycle {cycle} with no request in flight")
                    break
                q = outstanding.popleft()
                q.answered = cycle
                q.resp = {f: ctx.get(getattr(dut.resp.payload, f)) for f in RESP_FIELDS}
                answered += 1
                if q.resp["fault"] == 0 and (q.vaddr, q.access, q.user) not in self.recent:
                    self.recent.append((q.vaddr, q.access, q.user))
                    if len(self.recent) > self.working_set:
                        self.recent.pop(0)
                if answered % self.quiet_every == 0:
                    quiet, quiet_since = True, cycle
            if offered_req is not None and ctx.get(dut.req.ready):
                offered_req.accepted = cycle
                self.reqs.append(offered_req)
                outstanding.append(offered_req)
                offered_req = None
            if offered_ctl is not None and ctx.get(dut.ctl.ready):
                self.ctl_log.append((cycle, int(offered_ctl[0]), offered_ctl[1]))
                offered_ctl = None
            if ctx.get(dut.mem_req.valid) and mem_ready:
                addr = ctx.get(dut.mem_req.payload.addr)
                owner = outstanding[0] if outstanding else None
                if owner is None:
                    self.failures.append(f"seed {self.seed}: memory access {addr:#x} at cycle {cycle} "
                                         "with no request in flight")
                elif ctx.get(dut.mem_req.payload.we):
                    value = ctx.get(dut.mem_req.payload.wdata)
                    owner.writes.append((addr, value))
                    self.hw_mem.write64(addr, value)
                else:
                    owner.reads.append(addr)
                    reads_q.append((cycle + 1 + rng.randrange(self.max_latency + 1), self.hw_mem.read64(addr)))
            if head is not None and ctx.get(dut.mem_resp.ready):
                reads_q.popleft()
            await ctx.tick()
            cycle += 1
            self.feed_reference()

        self.feed_reference()
        if self.failures:
            return
        if answered < self.n_requests:
            self.failures.append(f"seed {self.seed}: only {answered} of {self.n_requests} requests answered "
                                 f"in {cycle} cycles")
            return
        for name, want in self.ref.counters.items():
            got = ctx.get(getattr(dut.counters, name))
            if got != want:
                self.failures.append(f"seed {self.seed}: counter {name}: hw {got}, ref {want}")
        self.stats = dict(cycles=cycle, resets=self.resets,
                          **{k: ctx.get(getattr(dut.counters, k)) for k in self.ref.counters})


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
    """Cycle-by-cycle driver for timing checks: DRAM with a fixed latency, ready always high."""

    def __init__(self, cfg, mem, latency):
        self.cfg, self.mem, self.latency = cfg, mem, latency
        self.dut = MMU(cfg)
        self.log = []  # (cycle, event, detail)

    def run(self, script):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)

        async def bench(ctx):
            self.ctx, self.cycle, self.reads = ctx, 0, deque()
            ctx.set(self.dut.flags.wp, 1)
            ctx.set(self.dut.flags.nxe, 1)
            ctx.set(self.dut.mem_req.ready, 1)
            ctx.set(self.dut.resp.ready, 1)
            await script(self)

        sim.add_testbench(bench)
        sim.run()
        return self.log

    async def step(self, req=None, ctl=None):
        """One clock cycle with these offers; returns (req accepted, ctl accepted, response or None)."""
        ctx, dut = self.ctx, self.dut
        ctx.set(dut.req.valid, req is not None)
        if req is not None:
            va, access = req
            ctx.set(dut.req.payload.vaddr, va)
            ctx.set(dut.req.payload.access, access)
            ctx.set(dut.req.payload.user, 1)
            ctx.set(dut.req.payload.id, self.cycle & 0xFF)
        ctx.set(dut.ctl.valid, ctl is not None)
        if ctl is not None:
            ctx.set(dut.ctl.payload.op, int(ctl[0]))
            ctx.set(dut.ctl.payload.value, ctl[1])
        head = self.reads[0] if self.reads and self.reads[0][0] <= self.cycle else None
        ctx.set(dut.mem_resp.valid, head is not None)
        if head is not None:
            ctx.set(dut.mem_resp.payload.rdata, head[1])
            self.reads.popleft()  # mem_resp.ready is checked below
            assert ctx.get(dut.mem_resp.ready)
        if ctx.get(dut.mem_req.valid):
            addr = ctx.get(dut.mem_req.payload.addr)
            if ctx.get(dut.mem_req.payload.we):
                self.mem.write64(addr, ctx.get(dut.mem_req.payload.wdata))
                self.log.append((self.cycle, "write", addr))
            else:
                self.reads.append((self.cycle + self.latency, self.mem.read64(addr)))
                self.log.append((self.cycle, "read", addr))
        resp = None
        if ctx.get(dut.resp.valid):
            resp = {f: ctx.get(getattr(dut.resp.payload, f)) for f in RESP_FIELDS}
            self.log.append((self.cycle, "resp", resp["tlb_hit"]))
        took_req = req is not None and ctx.get(dut.req.ready)
        took_ctl = ctl is not None and ctx.get(dut.ctl.ready)
        if took_req:
            self.log.append((self.cycle, "accept", req[0]))
        if took_ctl:
            self.log.append((self.cycle, "ctl", int(ctl[0])))
        await ctx.tick()
        self.cycle += 1
        return took_req, took_ctl, resp

    def counter(self, name):
        return self.ctx.get(getattr(self.dut.counters, name))


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
            hits.append((took, resp and resp["tlb_hit"], resp and resp["paddr"]))
        out["hits"] = hits

    d.run(script)
    per_level = latency + 1
    assert out["miss"]["tlb_hit"] == 0 and out["miss"]["paddr"] == FRAME
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
    assert out["after"]["tlb_hit"] == 0  # the entry is gone


# ---- directed scenarios, one operation at a time, against the reference -------------------------

class Lockstep:
    """Sequential driver: each operation completes (ack or response) before the next; every response and
    every memory access is compared with RefMMU as it happens."""

    def __init__(self, cfg: MMUConfig, mem: DictMem, flags: dict, latency: int = 2):
        self.d = Directed(cfg, mem, latency)
        self.ref = RefMMU(cfg, DictMem(mem.words), ControlRegs(cr3=0, **flags))
        self.flags = flags
        self.results = []

    async def ctl(self, op, value):
        self.ref.ctl(op, value)
        while not (await self.d.step(ctl=(op, value)))[1]:
            pass

    async def translate(self, va, access, user=1):
        d = self.d
        d.ctx.set(d.dut.req.payload.user, user)
        mark = len(d.log)
        while not (await d.step(req=(va, access)))[0]:
            pass
        resp = None
        while resp is None:
            _, _, resp = await d.step()
        for _ in range(4):  # let the fill finish
            await d.step()
        exp = self.ref.translate(va, Access(access), bool(user), resp["id"])
        want = dict(paddr=exp.paddr, fault=int(exp.fault), error_code=exp.error_code, size=int(exp.size),
                    tlb_hit=int(exp.tlb_hit), id=resp["id"])
        reads = [a for _, e, a in d.log[mark:] if e == "read"]
        writes = [a for _, e, a in d.log[mark:] if e == "write"]
        w_reads = [a for _, a, _ in exp.walk.reads] if exp.walk else []
        w_writes = [a for a, _ in exp.walk.writes] if exp.walk else []
        self.results.append((hex(va), resp == want and reads == w_reads and writes == w_writes, resp, want))
        return resp

    def run(self, script):
        async def wrapped(d):
            for k, v in self.flags.items():
                d.ctx.set(getattr(d.dut.flags, k), int(v))
            await script(self)

        self.d.run(wrapped)
        bad = [r for r in self.results if not r[1]]
        assert not bad, bad


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
        assert (await ls.translate(VA, Access.READ))["paddr"] == 0x1111_1000
        await ls.ctl(CtlOp.WRITE_CR3, 0x11000 | 2 | CR3_NOFLUSH)
        assert (await ls.translate(VA, Access.READ))["paddr"] == 0x2222_2000
        await ls.ctl(CtlOp.WRITE_CR3, 0x1000 | 1 | CR3_NOFLUSH)
        r = await ls.translate(VA, Access.READ)
        assert (r["tlb_hit"], r["paddr"]) == (1, 0x1111_1000)  # two matches: way 0 (PCID 1) wins
        await ls.translate(VA, Access.WRITE)  # clean: invalidated, walks, fills in place of the global one
        await ls.translate(VA, Access.WRITE)
        await ls.ctl(CtlOp.WRITE_CR3, 0x11000 | 2 | CR3_NOFLUSH)
        await ls.translate(VA, Access.READ)  # the global entry is gone: walks again
        await ls.translate(VA, Access.READ)
        await ls.ctl(CtlOp.FLUSH_VA, VA)  # global and PCID 2 entries for VA
        await ls.translate(VA, Access.READ)

    ls.run(script)
