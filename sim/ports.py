"""Pack and unpack the MMU top's flat Verilog payload vectors.

In Verilog every stream payload of the MMU top is one flat vector
``<port>__payload`` (and ``flags`` / ``counters`` are flat vectors too).  The bit
position of every field comes from the Amaranth layouts in ``hw/layouts.py``:
this module reads ``offset`` and ``width`` from the layout objects, so no bit
position is ever written down a second time on the testbench side.

Pure Python (no cocotb import), so it is unit-tested without a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw import layouts
from model.config import MMUConfig


class Payload:
    """Packs ``{field: int}`` into one integer and back, following a StructLayout.

    Only flat layouts are supported: every field is an unsigned integer of
    ``width`` bits at ``offset`` (nested layouts are flattened to their raw bits).
    """

    __slots__ = ("name", "fields", "width", "_order")

    def __init__(self, name: str, layout) -> None:
        self.name = name
        self.fields: dict[str, tuple[int, int]] = {}
        for fname, field in layout:
            self.fields[fname] = (field.offset, field.width)
        self.width: int = layout.size
        self._order = tuple(self.fields.items())

    def pack(self, **values: int) -> int:
        """Fields not named are 0; a value that does not fit its field is an error (never clamped)."""
        word = 0
        for fname, value in values.items():
            try:
                offset, width = self.fields[fname]
            except KeyError:
                raise KeyError(f"{self.name}: no field {fname!r} (fields: {', '.join(self.fields)})") from None
            value = int(value)
            if value < 0 or value >> width:
                raise ValueError(f"{self.name}.{fname} = {value:#x}: does not fit in {width} bits")
            word |= value << offset
        return word

    def unpack(self, word: int) -> dict[str, int]:
        word = int(word)
        return {fname: (word >> offset) & ((1 << width) - 1) for fname, (offset, width) in self._order}

    def get(self, word: int, fname: str) -> int:
        offset, width = self.fields[fname]
        return (int(word) >> offset) & ((1 << width) - 1)

    def __repr__(self) -> str:
        spans = ", ".join(f"{n}[{o + w - 1}:{o}]" for n, (o, w) in self._order)
        return f"Payload({self.name}, {self.width} bits: {spans})"


@dataclass(frozen=True)
class MMUPorts:
    """Every payload of the MMU top for one configuration."""

    req: Payload
    resp: Payload
    ctl: Payload
    mem_req: Payload
    mem_resp: Payload
    flags: Payload
    counters: Payload

    @classmethod
    def for_config(cls, cfg: MMUConfig) -> "MMUPorts":
        return cls(
            req=Payload("req", layouts.request_layout(cfg)),
            resp=Payload("resp", layouts.response_layout(cfg)),
            ctl=Payload("ctl", layouts.ctl_layout(cfg)),
            mem_req=Payload("mem_req", layouts.mem_req_layout(cfg)),
            mem_resp=Payload("mem_resp", layouts.MemRespLayout),
            flags=Payload("flags", layouts.FlagsLayout),
            counters=Payload("counters", layouts.counters_layout()),
        )


COUNTER_NAMES = layouts.COUNTER_NAMES
