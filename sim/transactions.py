"""The transactions of the MMU top's ports, as both testbenches see them (no simulator imported).

The cocotb agents (``sim.mmu_driver``) and the Amaranth-simulator bench
(``sim.pysim``) make these objects and hand them to one ``sim.scoreboard.Scoreboard``.
Cycle numbers are clock edges: a handshake "at cycle c" happened on edge c.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.x86.pte import Access, FaultKind, PageSize
from model.x86.tlbflush import CtlOp


def accepted_at(cycle: int) -> str:
    """The suffix ' accepted @cycle N' of a transaction the port took; nothing before."""
    return f" accepted @cycle {cycle}" if cycle >= 0 else ""


@dataclass(eq=False)
class Request:
    vaddr: int
    access: Access
    user: bool
    id: int
    seq: int = -1  # position among accepted requests since the last reset
    accept_cycle: int = -1
    response: "Response | None" = None
    _done: object | None = field(default=None, repr=False)  # the cocotb driver's completion event

    def __str__(self) -> str:
        who = "user" if self.user else "supervisor"
        return f"#{self.seq} id={self.id} {Access(self.access).name.lower()} {self.vaddr:#018x} ({who})" \
            + accepted_at(self.accept_cycle)


@dataclass(eq=False)
class Response:
    paddr: int
    fault: int
    error_code: int
    size: int
    tlb_hit: bool
    id: int
    cycle: int = -1

    @classmethod
    def from_fields(cls, f: dict, cycle: int) -> "Response":
        return cls(f["paddr"], f["fault"], f["error_code"], f["size"], bool(f["tlb_hit"]), f["id"], cycle)

    def __str__(self) -> str:
        return describe_answer(self.fault, self.error_code, self.paddr, self.size, self.tlb_hit, self.id)


def describe_answer(fault, error_code, paddr, size, tlb_hit, id_) -> str:
    try:
        kind = FaultKind(fault)
    except ValueError:
        return f"fault={fault} (not a FaultKind) error_code={error_code:#x} paddr={paddr:#x} id={id_}"
    hit = "hit" if tlb_hit else "miss"
    if kind == FaultKind.NONE:
        try:
            sz = PageSize(size).label
        except ValueError:
            sz = f"size={size}?"
        return f"paddr={paddr:#x} {sz} tlb_{hit} id={id_}"
    if kind == FaultKind.NONCANONICAL:
        return f"NONCANONICAL tlb_{hit} id={id_}"
    return f"#PF error_code={error_code:#x} ({pf_bits(error_code)}) tlb_{hit} id={id_}"


def pf_bits(code: int) -> str:
    names = [("P", 1), ("W", 2), ("U", 4), ("RSVD", 8), ("I", 16)]
    return "|".join(n for n, b in names if code & b) or "not-present"


@dataclass(eq=False)
class CtlTxn:
    op: CtlOp
    value: int
    accept_cycle: int = -1
    _done: object | None = field(default=None, repr=False)  # the cocotb driver's completion event

    def __str__(self) -> str:
        return f"{CtlOp(self.op).name}({self.value:#x})" + accepted_at(self.accept_cycle)


@dataclass(frozen=True)
class Flags:
    """CR0.WP, EFER.NXE, CR4.SMEP, CR4.SMAP, CR4.PCIDE, as held on the ``flags`` port."""

    wp: bool = True
    nxe: bool = True
    smep: bool = False
    smap: bool = False
    pcide: bool = False

    def as_dict(self) -> dict:
        return {k: bool(getattr(self, k)) for k in ("wp", "nxe", "smep", "smap", "pcide")}
