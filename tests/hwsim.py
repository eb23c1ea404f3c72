"""Running one hw/ block alone in Amaranth's simulator, as the unit tests of the TLB, PWC and walker do."""

from __future__ import annotations

import random

from amaranth.sim import Simulator


def simulate(dut, bench) -> None:
    """Run the async testbench ``bench(ctx)`` on ``dut`` with a clock."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def seeded(name: str, seed: int) -> random.Random:
    """The generator of one randomised test; the seed is printed so that a failure replays from it."""
    print(f"{name}: seed {seed} (replay: set this seed in the test's parametrisation)")
    return random.Random(seed)


class MockDRAM:
    """The DRAM behind a walker's memory port: reads answered in order after 1..``max_latency`` cycles,
    ``mem_req.ready`` dropped with probability 1 - ``p_ready``; writes go to ``mem`` at once.

    ``step`` drives one cycle's inputs and records its handshakes (call it before the tick)."""

    def __init__(self, rng, mem, *, p_ready=0.8, max_latency=4):
        self.rng, self.mem, self.p_ready, self.max_latency = rng, mem, p_ready, max_latency
        self.reads, self.writes, self.queue = [], [], []

    def latency(self) -> int:
        return 1 + self.rng.randrange(self.max_latency)

    def step(self, ctx, req, resp, now: int) -> None:
        ready = self.rng.random() < self.p_ready
        ctx.set(req.ready, ready)
        answer = self.queue[0][1] if self.queue and self.queue[0][0] <= now else None
        ctx.set(resp.valid, answer is not None)
        if answer is not None:
            ctx.set(resp.payload.rdata, answer)
            if ctx.get(resp.ready):
                self.queue.pop(0)
        if not (ready and ctx.get(req.valid)):
            return
        addr = ctx.get(req.payload.addr)
        if ctx.get(req.payload.we):
            self.writes.append((addr, ctx.get(req.payload.wdata)))
            self.mem.write64(addr, self.writes[-1][1])
        else:
            self.reads.append(addr)
            self.queue.append((now + self.latency(), self.mem.read64(addr)))

    def idle(self, ctx, req, resp) -> None:
        ctx.set(req.ready, 0)
        ctx.set(resp.valid, 0)
