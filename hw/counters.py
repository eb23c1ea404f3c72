"""The MMU's performance counters."""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.layouts import COUNTER_NAMES, CounterEventsLayout, counters_layout


class Counters(wiring.Component):
    """One 32-bit counter per event of ``hw.layouts.COUNTER_NAMES``; they wrap, and reset to 0.

    Ports:

    ``events`` (In, CounterEventsLayout: one bit per counter)
        a pulse in a cycle counts that event once, at the end of the cycle.
    ``counters`` (Out, counters_layout(): 32 bits per counter)
        the counts so far (registered: an event shows in the next cycle).
    """

    def __init__(self):
        super().__init__({"events": In(CounterEventsLayout), "counters": Out(counters_layout())})

    def elaborate(self, platform):
        m = Module()
        for name in COUNTER_NAMES:
            with m.If(self.events[name]):
                m.d.sync += self.counters[name].eq(self.counters[name] + 1)
        return m
