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


class DictMem:
    """Sparse 64-bit-word memory with the ``read64``/``write64`` interface of the reference walker."""

    def __init__(self, words=None):
        self.words = dict(words or {})

    def read64(self, addr):
        return self.words.get(addr, 0)

    def write64(self, addr, value):
        self.words[addr] = value
