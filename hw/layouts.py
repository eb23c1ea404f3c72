"""Port payloads and the MMU top's signature, declared once.

Every stream on the MMU top is an `amaranth.lib.stream` (valid/ready, payload).
In Verilog each payload is one flat vector named ``<port>__payload``; the
testbench packs and unpacks it from these same layouts (`sim/ports.py`), so the
bit positions are never written down twice.
"""

from __future__ import annotations

from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from model.config import MMUConfig
from model.x86.tlbflush import CtlOp  # noqa: F401  (the ctl port encoding)

# The PTE as the SDM draws it (Vol. 3A, tables 4-15..4-20): bit 0 first.
PTELayout = data.StructLayout({
    "p": 1, "rw": 1, "us": 1, "pwt": 1, "pcd": 1, "a": 1, "d": 1, "ps": 1, "g": 1,
    "ignored_lo": 3,
    "addr": 40,  # bits 12..51: physical address bits, reserved from M upwards
    "ignored_hi": 11,
    "xd": 1,
})


FlagsLayout = data.StructLayout({"wp": 1, "nxe": 1, "smep": 1, "smap": 1, "pcide": 1})

N_COUNTERS = 9
COUNTER_NAMES = ("lookups", "hits", "misses", "walks", "walk_cycles", "mem_reads", "mem_writes", "faults",
                 "pwc_hits")
COUNTER_WIDTH = 32


def request_layout(cfg: MMUConfig) -> data.StructLayout:
    return data.StructLayout({"vaddr": 64, "access": 2, "user": 1, "id": cfg.id_bits})


def response_layout(cfg: MMUConfig) -> data.StructLayout:
    return data.StructLayout({
        "paddr": cfg.maxphyaddr,
        "fault": 2,  # model.x86.pte.FaultKind
        "error_code": 5,  # model.x86.pte.PF_* bits
        "size": 2,  # model.x86.pte.PageSize
        "tlb_hit": 1,
        "id": cfg.id_bits,
    })


def ctl_layout(cfg: MMUConfig) -> data.StructLayout:
    return data.StructLayout({"op": 3, "value": 64})


def mem_req_layout(cfg: MMUConfig) -> data.StructLayout:
    return data.StructLayout({"addr": cfg.maxphyaddr, "wdata": 64, "we": 1})


MemRespLayout = data.StructLayout({"rdata": 64})


def counters_layout() -> data.StructLayout:
    return data.StructLayout({name: COUNTER_WIDTH for name in COUNTER_NAMES})


def mmu_signature(cfg: MMUConfig) -> wiring.Signature:
    """The MMU top's ports, as ARCHITECTURE.md lists them.

    ``ctl`` carries CR3 writes and flushes; its handshake (valid & ready) is the
    acknowledge: the operation has taken effect in the cycle it is accepted.
    ``flags`` are the CR0/CR4/EFER bits, levels that the core holds steady.
    """
    return wiring.Signature({
        "req": In(stream.Signature(request_layout(cfg))),
        "resp": Out(stream.Signature(response_layout(cfg))),
        "ctl": In(stream.Signature(ctl_layout(cfg))),
        "flags": In(FlagsLayout),
        "mem_req": Out(stream.Signature(mem_req_layout(cfg))),
        "mem_resp": In(stream.Signature(MemRespLayout)),
        "counters": Out(counters_layout()),
    })
