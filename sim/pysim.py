"""The MMU top (``hw.mmu.MMU``) in Amaranth's Python simulator, with the cocotb testbench's DRAM and scoreboard.

Two users: ``tests/test_hw_mmu.py`` (random and directed checks of the design
before any Verilog is built) and ``mmu explain`` / ``mmu sweep`` through
``time_translations`` (what a translation costs on the real design, in cycles).

``PySimBench.step`` is one clock cycle: it offers at most one request and one
control operation, presents the DRAM's next read response, then samples every
handshake of that edge in the cocotb testbench's order (memory, control,
responses, requests) and reports each to ``sim.scoreboard.Scoreboard``, the
same object the cocotb testbench feeds.  The memory port is ``sim.dram``'s:
``DRAMStore`` holds what the hardware read and wrote (its writes in the
overlay until the scoreboard has predicted them), ``DRAMTimingModel`` says when
each read may be answered and when ``mem_req.ready`` drops.  Cycle numbers
count edges since the simulation started; a handshake "at cycle c" is the one
sampled before edge c.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from dataclasses import dataclass, field

from amaranth import ClockDomain, Module
from amaranth.sim import Simulator

from hw.layouts import COUNTER_NAMES
from hw.mmu import MMU
from model.config import DRAMTiming, MMUConfig
from model.reference.ref_walker import ControlRegs
from model.x86.pte import Access, FaultKind, PageSize
from model.x86.tlbflush import CtlOp
from sim.dram import DRAMStore, DRAMTimingModel, MemOp
from sim.scoreboard import Scoreboard
from sim.transactions import CtlTxn, Flags, Request, Response

RESP_FIELDS = ("paddr", "fault", "error_code", "size", "tlb_hit", "id")


class HardwareError(AssertionError):
    """The design broke the port protocol or did not answer: a hardware bug, reported with the cycle."""


@dataclass
class Edge:
    """What happened on one clock edge."""

    cycle: int
    req_accepted: bool = False
    ctl_accepted: bool = False
    response: Response | None = None
    request: Request | None = None  # the request the response answers
    mem: list[MemOp] = field(default_factory=list)


class PySimBench:
    """One MMU in Amaranth's simulator, its DRAM, and (``check=True``) the scoreboard.

    ``timing`` defaults to ``cfg.dram``; ``resp_stall_prob`` is the chance that
    ``resp.ready`` is low in a cycle.  Random choices come from ``seed`` only.
    """

    def __init__(self, cfg: MMUConfig, mem, *, seed: int = 0, flags: Flags = Flags(), cr3: int = 0,
                 timing: DRAMTiming | None = None, resp_stall_prob: float = 0.0, check: bool = True,
                 whole_payload: bool = False, max_wait: int = 10_000) -> None:
        self.cfg, self.seed, self.flags = cfg, seed, flags
        self.dut = MMU(cfg)
        self.store = DRAMStore(mem)
        master = random.Random(seed)
        self.rng = random.Random(master.getrandbits(64))  # response backpressure
        self.dram = DRAMTimingModel(timing or cfg.dram, random.Random(master.getrandbits(64)))
        self.scoreboard = Scoreboard(cfg, mem, self.store, seed=seed, flags=flags, cr3=cr3,
                                     whole_payload=whole_payload) if check else None
        self.resp_stall_prob = resp_stall_prob
        self.max_wait = max_wait
        self.outstanding: deque[Request] = deque()
        self.reads: deque[tuple[int, MemOp]] = deque()  # (first cycle it may be presented, the read)
        self.cycle = 0
        self._seq = 0
        self.ctx = self._rst = None

    # --- running ------------------------------------------------------------------------------

    def run(self, testbench) -> None:
        """Simulate until ``await testbench(self)`` returns; a scoreboard mismatch is raised from here."""
        top = Module()
        top.domains.sync = cd = ClockDomain("sync")
        top.submodules.mmu = self.dut
        self._rst = cd.rst
        sim = Simulator(top)
        sim.add_clock(1e-8)

        async def bench(ctx):
            self.ctx = ctx
            self._drive_flags(self.flags)
            await testbench(self)

        sim.add_testbench(bench)
        sim.run()

    async def step(self, req: Request | None = None, ctl: CtlTxn | None = None) -> Edge:
        """One clock cycle with ``req`` and ``ctl`` offered (offer the same object again until accepted)."""
        ctx, dut, cycle = self.ctx, self.dut, self.cycle
        ctx.set(dut.req.valid, req is not None)
        if req is not None:
            p = dut.req.payload
            ctx.set(p.vaddr, req.vaddr)
            ctx.set(p.access, int(req.access))
            ctx.set(p.user, int(req.user))
            ctx.set(p.id, req.id)
        ctx.set(dut.ctl.valid, ctl is not None)
        if ctl is not None:
            ctx.set(dut.ctl.payload.op, int(ctl.op))
            ctx.set(dut.ctl.payload.value, ctl.value)
        resp_ready = not (self.resp_stall_prob and self.rng.random() < self.resp_stall_prob)
        ctx.set(dut.resp.ready, resp_ready)
        mem_ready = not self.dram.drops_ready()
        ctx.set(dut.mem_req.ready, mem_ready)
        head = self.reads[0][1] if self.reads and self.reads[0][0] <= cycle else None
        ctx.set(dut.mem_resp.valid, head is not None)
        if head is not None:
            ctx.set(dut.mem_resp.payload.rdata, head.value)

        edge = Edge(cycle)
        if mem_ready and ctx.get(dut.mem_req.valid):
            edge.mem.append(self._memory(cycle))
        if head is not None and ctx.get(dut.mem_resp.ready):
            self.reads.popleft()
        if ctl is not None and ctx.get(dut.ctl.ready):
            ctl.accept_cycle, edge.ctl_accepted = cycle, True
            if self.scoreboard:
                self.scoreboard.on_ctl(ctl)
        if resp_ready and ctx.get(dut.resp.valid):
            edge.response, edge.request = self._response(cycle)
        if req is not None and ctx.get(dut.req.ready):
            req.seq, req.accept_cycle, edge.req_accepted = self._seq, cycle, True
            self._seq += 1
            self.outstanding.append(req)
            if self.scoreboard:
                self.scoreboard.on_request(req)
        await ctx.tick()
        self.cycle += 1
        return edge

    def _memory(self, cycle: int) -> MemOp:
        p = self.dut.mem_req.payload
        addr = self.ctx.get(p.addr)
        if not self.outstanding:
            raise HardwareError(f"memory access {addr:#x} at cycle {cycle} with no request in flight (seed {self.seed})")
        if self.ctx.get(p.we):
            op = self.store.hw_write(addr, self.ctx.get(p.wdata), cycle)
            self.dram.write(addr)
        else:
            op = self.store.hw_read(addr, cycle)
            self.reads.append((self.dram.schedule_read(addr, cycle), op))
        return op

    def _response(self, cycle: int) -> tuple[Response, Request]:
        p = self.dut.resp.payload
        resp = Response.from_fields({f: self.ctx.get(getattr(p, f)) for f in RESP_FIELDS}, cycle)
        if not self.outstanding:
            raise HardwareError(f"response {resp} at cycle {cycle} with no request in flight (seed {self.seed})")
        req = self.outstanding.popleft()
        req.response = resp
        if self.scoreboard:
            self.scoreboard.on_response(resp, req)
        return resp, req

    # --- sequences of cycles ----------------------------------------------------------------------

    async def control(self, txn: CtlTxn) -> int:
        """Offer ``txn`` until accepted (which is its acknowledge); returns the cycle."""
        for _ in range(self.max_wait):
            if (await self.step(ctl=txn)).ctl_accepted:
                return txn.accept_cycle
        raise HardwareError(f"ctl {txn} not accepted in {self.max_wait} cycles (seed {self.seed})")

    async def translate(self, req: Request) -> tuple[Response, list[MemOp]]:
        """Send ``req`` alone and wait for its response; returns it and the memory transactions meanwhile."""
        ops: list[MemOp] = []
        for _ in range(self.max_wait):
            edge = await self.step(req=None if req.accept_cycle >= 0 else req)
            ops += edge.mem
            if req.response is not None:
                return req.response, ops
        raise HardwareError(f"no response to {req} in {self.max_wait} cycles (seed {self.seed})")

    async def reset(self, flags: Flags, cr3: int = 0) -> None:
        """One cycle of reset with every input idle: in-flight requests and reads are dropped; the
        hardware's unchecked writes stay in memory (they reached DRAM) and the reference starts afresh."""
        ctx, dut = self.ctx, self.dut
        for s in (dut.req.valid, dut.ctl.valid, dut.resp.ready, dut.mem_req.ready, dut.mem_resp.valid):
            ctx.set(s, 0)
        ctx.set(self._rst, 1)
        await ctx.tick()
        ctx.set(self._rst, 0)
        self.cycle += 1
        self.outstanding.clear()
        self.reads.clear()
        self.dram.reset()
        self._seq = 0
        if self.scoreboard:
            self.scoreboard.on_reset(flags, cr3)
        else:
            self.store.commit_pending()
        self.set_flags(flags)

    def set_flags(self, flags: Flags) -> None:
        """Change the level flags (between requests: the scoreboard applies earlier operations first)."""
        self.flags = flags
        self._drive_flags(flags)
        if self.scoreboard:
            self.scoreboard.on_flags(flags)

    def _drive_flags(self, flags: Flags) -> None:
        for name, value in flags.as_dict().items():
            self.ctx.set(getattr(self.dut.flags, name), int(value))

    def counters(self) -> dict[str, int]:
        return {name: self.ctx.get(getattr(self.dut.counters, name)) for name in COUNTER_NAMES}

    def finish(self) -> None:
        """End of a checked run: every control operation applied, counters equal, no unpredicted memory access."""
        self.scoreboard.flush_pending()
        self.scoreboard.check_counters(self.counters())
        self.scoreboard.check_quiescent()


# --- what `mmu explain` and `mmu sweep` ask: cycles on the real design ------------------------------

@dataclass
class HWTranslation:
    """One response of the hardware and what it cost."""

    vaddr: int
    access: Access
    user: bool
    paddr: int = 0
    fault: FaultKind = FaultKind.NONE
    error_code: int = 0
    size: PageSize = PageSize.SIZE_4K
    tlb_hit: bool = False
    cycles: int = 0  # accept handshake to response handshake
    reads: list[int] = field(default_factory=list)  # entry addresses, in order
    writes: list[tuple[int, int]] = field(default_factory=list)  # (address, value), in order


def time_translations(cfg: MMUConfig, mem, ctrl: ControlRegs,
                      requests: list[tuple[int, Access, bool]]) -> tuple[list[HWTranslation], dict[str, int]]:
    """Run ``requests`` (vaddr, access, user) one at a time through a freshly reset MMU, after a CR3
    write; returns the answers in order and the performance counters at the end.

    ``resp.ready`` stays high and ``mem_req.ready`` too (``ready_drop`` is not modelled, so the
    count is repeatable); a TLB hit costs 1 cycle.  Nothing is compared here (the caller compares
    with the reference model and says where they differ), and ``mem`` is never written: the
    hardware's A/D writes stay in the DRAM overlay.
    """
    flags = Flags(**{name: bool(getattr(ctrl, name)) for name in ("wp", "nxe", "smep", "smap", "pcide")})
    # A walk is at most 4 reads and 4 A/D writes: the wait for one answer grows with the DRAM's latency.
    bench = PySimBench(cfg, mem, flags=flags, timing=dataclasses.replace(cfg.dram, ready_drop=0.0), check=False,
                       max_wait=10_000 + 8 * cfg.dram.worst_read_cycles)
    results: list[HWTranslation] = []
    counters: dict[str, int] = {}

    async def script(b: PySimBench) -> None:
        await b.control(CtlTxn(CtlOp.WRITE_CR3, ctrl.cr3))
        for vaddr, access, user in requests:
            req = Request(vaddr, Access(access), bool(user), 0)
            resp, ops = await b.translate(req)
            results.append(HWTranslation(
                vaddr, req.access, req.user, resp.paddr, FaultKind(resp.fault), resp.error_code, PageSize(resp.size),
                resp.tlb_hit, resp.cycle - req.accept_cycle, [op.addr for op in ops if not op.write],
                [(op.addr, op.value) for op in ops if op.write]))
        counters.update(b.counters())

    bench.run(script)
    return results, counters
