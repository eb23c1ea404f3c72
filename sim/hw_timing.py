"""Cycle counts of the real MMU (hw.mmu.MMU) in Amaranth's Python simulator.

``mmu explain`` asks "what does this translation cost on the hardware?": the
only honest answer is to run the Amaranth design on the same page tables and
count clock edges, so that a student who changes the DRAM latency, the TLB
geometry or the walker sees the effect in cycles.

The harness loads CR3 and the control flags, then sends the requests one at a
time (each waits for the previous response), with ``resp.ready`` always high.
The DRAM answers through ``sim.dram.DRAMTimingModel`` (the latency model of the
cocotb DRAM agent): a read accepted in cycle c is presented from cycle
c + max(1, latency), in order; ``mem_req.ready`` is always high (``ready_drop``
is not modelled, so the count is repeatable).  The cycles of a request are
from its accept handshake to its response handshake: a TLB hit costs 1.

The hardware's A/D writes go to an overlay, never to the caller's memory: the
reference model makes its own writes, and the two must stay comparable.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from amaranth.sim import Simulator

from hw.layouts import COUNTER_NAMES
from hw.mmu import MMU
from model.config import MMUConfig
from model.reference.ref_walker import ControlRegs
from model.teach.explain import OverlayMem
from model.x86.pte import Access, FaultKind, PageSize
from model.x86.tlbflush import CtlOp
from sim.dram import DRAMTimingModel

_MAX_CYCLES_PER_REQUEST = 10_000


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


class HardwareError(RuntimeError):
    """The design did not answer: a hardware bug, reported with the request."""


def time_translations(cfg: MMUConfig, mem, ctrl: ControlRegs,
                      requests: list[tuple[int, Access, bool]]) -> tuple[list[HWTranslation], dict[str, int]]:
    """Run ``requests`` (vaddr, access, user) through a freshly reset MMU; returns the
    answers in order and the performance counters at the end."""
    dut = MMU(cfg)
    dram = DRAMTimingModel(cfg.dram, random.Random(0))
    memory = OverlayMem(mem)
    results = [HWTranslation(vaddr, Access(access), bool(user)) for vaddr, access, user in requests]
    counters: dict[str, int] = {}

    async def bench(ctx):
        for name in ("wp", "nxe", "smep", "smap", "pcide"):
            ctx.set(getattr(dut.flags, name), int(getattr(ctrl, name)))
        ctx.set(dut.resp.ready, 1)
        ctx.set(dut.mem_req.ready, 1)
        ctx.set(dut.ctl.payload.op, int(CtlOp.WRITE_CR3))
        ctx.set(dut.ctl.payload.value, ctrl.cr3)
        ctx.set(dut.ctl.valid, 1)
        while not ctx.get(dut.ctl.ready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(dut.ctl.valid, 0)

        cycle = 0
        reads = deque()  # (first cycle presented, data)
        last_ready = -1
        for r in results:
            ctx.set(dut.req.payload.vaddr, r.vaddr)
            ctx.set(dut.req.payload.access, int(r.access))
            ctx.set(dut.req.payload.user, int(r.user))
            ctx.set(dut.req.payload.id, 0)
            ctx.set(dut.req.valid, 1)
            accepted = None
            deadline = cycle + _MAX_CYCLES_PER_REQUEST
            while True:
                if cycle > deadline:
                    raise HardwareError(f"hw.mmu.MMU gave no response to {r.vaddr:#x} ({r.access.name.lower()}) "
                                        f"in {_MAX_CYCLES_PER_REQUEST} cycles")
                head = reads[0] if reads and reads[0][0] <= cycle else None
                ctx.set(dut.mem_resp.valid, head is not None)
                if head is not None:
                    ctx.set(dut.mem_resp.payload.rdata, head[1])
                if accepted is not None and ctx.get(dut.resp.valid):
                    r.cycles = cycle - accepted
                    p = dut.resp.payload
                    r.paddr, r.error_code = ctx.get(p.paddr), ctx.get(p.error_code)
                    r.fault, r.size = FaultKind(ctx.get(p.fault)), PageSize(ctx.get(p.size))
                    r.tlb_hit = bool(ctx.get(p.tlb_hit))
                    break
                if accepted is None and ctx.get(dut.req.ready):
                    accepted = cycle
                if ctx.get(dut.mem_req.valid):
                    addr = ctx.get(dut.mem_req.payload.addr)
                    if ctx.get(dut.mem_req.payload.we):
                        value = ctx.get(dut.mem_req.payload.wdata)
                        memory.write64(addr, value)
                        r.writes.append((addr, value))
                        dram.access(addr, True)
                    else:
                        r.reads.append(addr)
                        ready = max(cycle + max(1, dram.access(addr, False)), last_ready + 1)
                        last_ready = ready
                        reads.append((ready, memory.read64(addr)))
                if head is not None and ctx.get(dut.mem_resp.ready):
                    reads.popleft()
                await ctx.tick()
                cycle += 1
                if accepted == cycle - 1:
                    ctx.set(dut.req.valid, 0)
            await ctx.tick()  # the response handshake
            cycle += 1
        for name in COUNTER_NAMES:
            counters[name] = ctx.get(getattr(dut.counters, name))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results, counters
