"""Port payloads, the MMU top's signature and the sub-signatures between its blocks, declared once.

Every stream on the MMU top is an `amaranth.lib.stream` (valid/ready, payload).
In Verilog each payload is one flat vector named ``<port>__payload``; the
testbench packs and unpacks it from these same layouts (`sim/ports.py`), so the
bit positions are never written down twice.

Enumerated fields take their shape from the enums of ``model.x86`` (``Access``,
``FaultKind``, ``PageSize``, ``Level``, ``CtlOp``): a Python enum is an Amaranth
shape of the width its largest value needs, so the port encoding *is* the
model's encoding and the waveform viewer shows member names.

The sub-signatures are drawn from the side that starts the exchange (the MMU
top's request pipeline for a TLB lookup or fill, the control decoder for a
flush, the walker for a page-walk-cache lookup); the block that answers takes
the flipped signature, ``In(...)``.
"""

from __future__ import annotations

from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from model.config import MMUConfig
from model.x86.pte import Access, FaultKind, Level, PageSize
from model.x86.tlbflush import CtlOp

VA_BITS = 48  # what the TLBs, the PWC and the walker see of a (canonical) virtual address
PCID_BITS = 12

# The paging-structure entry as the SDM draws it (Vol. 3A, tables 4-15..4-20), bit 0 first: the
# walker's view of every entry it reads.
PTELayout = data.StructLayout({
    "p": 1, "rw": 1, "us": 1, "pwt": 1, "pcd": 1, "a": 1, "d": 1, "ps": 1, "g": 1,
    "ignored_lo": 3,
    "addr": 40,  # bits 12..51: physical address bits, reserved from M upwards
    "ignored_hi": 11,
    "xd": 1,
})

# The page-fault error code (SDM 4.7), bit 0 first.
ErrorCodeLayout = data.StructLayout({"p": 1, "wr": 1, "us": 1, "rsvd": 1, "id": 1})

FlagsLayout = data.StructLayout({"wp": 1, "nxe": 1, "smep": 1, "smap": 1, "pcide": 1})

COUNTER_NAMES = ("lookups", "hits", "misses", "walks", "walk_cycles", "mem_reads", "mem_writes", "faults",
                 "pwc_hits")
N_COUNTERS = len(COUNTER_NAMES)
COUNTER_WIDTH = 32


def fields_eq(view, **values) -> list:
    """Assignments of ``values`` to the fields of a struct ``view``, by name."""
    return [view[name].eq(value) for name, value in values.items()]


# ---- the MMU top's ports ------------------------------------------------------------------------

def request_layout(cfg: MMUConfig) -> data.StructLayout:
    return data.StructLayout({"vaddr": 64, "access": Access, "user": 1, "id": cfg.id_bits})


def response_layout(cfg: MMUConfig) -> data.StructLayout:
    return data.StructLayout({
        "paddr": cfg.maxphyaddr,
        "fault": FaultKind,
        "error_code": 5,  # ErrorCodeLayout's bits (a plain field: the testbench reads it as one number)
        "size": PageSize,
        "tlb_hit": 1,
        "id": cfg.id_bits,
    })


def ctl_layout(cfg: MMUConfig) -> data.StructLayout:
    return data.StructLayout({"op": CtlOp, "value": 64})


def mem_req_layout(cfg: MMUConfig) -> data.StructLayout:
    return data.StructLayout({"addr": cfg.maxphyaddr, "wdata": 64, "we": 1})


MemRespLayout = data.StructLayout({"rdata": 64})


def counters_layout() -> data.StructLayout:
    return data.StructLayout({name: COUNTER_WIDTH for name in COUNTER_NAMES})


# One pulse per counted event, named as the counters.
CounterEventsLayout = data.StructLayout({name: 1 for name in COUNTER_NAMES})


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


def cache_signature(lookup: wiring.Signature, fill: wiring.Signature, flush: wiring.Signature) -> wiring.Signature:
    """The ports of a cache (a TLB, the page-walk cache): it answers a lookup, takes fills and flushes."""
    return wiring.Signature({"lookup": In(lookup), "fill": In(fill), "flush": In(flush)})


# ---- TLB -------------------------------------------------------------------------------------------

def tlb_lookup_signature(cfg: MMUConfig) -> wiring.Signature:
    """Request pipeline -> TLB: read a set (stage 0), then look up and commit (stage 1).

    ``read``/``read_vaddr``: the main array reads the set of ``read_vaddr``; the
    lookup of the next cycle compares it.  ``vaddr`` ... ``flags``: the lookup,
    answered combinationally on ``matched`` (some entry matches), ``hit`` (the
    match can complete: permissions, and dirty for a write), ``paddr``, ``size``.
    ``commit``: the lookup counts: a hit touches the replacement state, a match
    that cannot complete is invalidated at the end of the cycle.
    """
    return wiring.Signature({
        "read": Out(1), "read_vaddr": Out(VA_BITS),
        "vaddr": Out(VA_BITS), "pcid": Out(PCID_BITS), "access": Out(Access), "user": Out(1),
        "flags": Out(FlagsLayout),
        "commit": Out(1),
        "matched": In(1), "hit": In(1), "paddr": In(cfg.maxphyaddr), "size": In(PageSize),
    })


def tlb_fill_layout(cfg: MMUConfig) -> data.StructLayout:
    """A translation from a successful walk; rights are combined over every level."""
    return data.StructLayout({
        "vaddr": VA_BITS, "pcid": PCID_BITS, "size": PageSize,
        "frame": cfg.maxphyaddr - 12,  # page base, bits M-1:12 (low bits 0 for 2M/1G)
        "rw": 1, "us": 1, "nx": 1, "dirty": 1, "global_": 1,
    })


def tlb_fill_signature(cfg: MMUConfig) -> wiring.Signature:
    """Request pipeline -> TLB: ``en`` installs ``entry`` at the end of the cycle."""
    return wiring.Signature({"en": Out(1), "entry": Out(tlb_fill_layout(cfg))})


# What a TLB flush drops: every valid entry with ~(keep_global & G), (~match_pcid | PCID = pcid | G)
# and (~match_va | the entry covers va).
TLBFlushLayout = data.StructLayout({
    "keep_global": 1, "match_pcid": 1, "pcid": PCID_BITS, "match_va": 1, "va": VA_BITS,
})

TLBFlushSignature = wiring.Signature({
    # control decoder -> TLBs.  ``prepare``: read the set of ``which.va`` (the first cycle of a
    # flush-by-VA); ``en``: drop what ``which`` selects at the end of the cycle.
    "prepare": Out(1), "en": Out(1), "which": Out(TLBFlushLayout),
})


# ---- page-walk cache -------------------------------------------------------------------------------

def pwc_entry_layout(cfg: MMUConfig) -> data.StructLayout:
    """One cached non-leaf entry (PML4E, PDPTE or PDE)."""
    return data.StructLayout({
        "level": Level,  # PML4, PDPT or PD: the level of the cached entry
        "pcid": PCID_BITS,
        "prefix": 27,  # vaddr[47:21]; a PML4E compares [47:39], a PDPTE [47:30]
        "base": cfg.maxphyaddr - 12,  # next table, bits M-1:12
        "rw": 1, "us": 1, "xd": 1,  # combined down to and including this level
    })


def pwc_lookup_signature(cfg: MMUConfig) -> wiring.Signature:
    """Walker -> page-walk cache: the deepest entry of ``pcid`` covering ``vaddr`` (combinational);
    ``commit`` makes a hit the most recently used."""
    return wiring.Signature({
        "vaddr": Out(VA_BITS), "pcid": Out(PCID_BITS), "commit": Out(1),
        "hit": In(1), "entry": In(pwc_entry_layout(cfg)),
    })


def pwc_fill_signature(cfg: MMUConfig) -> wiring.Signature:
    """Walker -> page-walk cache: ``en`` inserts ``entry`` at the end of the cycle."""
    return wiring.Signature({"en": Out(1), "entry": Out(pwc_entry_layout(cfg))})


PWCFlushSignature = wiring.Signature({
    # control decoder -> page-walk cache: ``en`` drops every entry, or those of ``pcid`` with ``match_pcid``.
    "en": Out(1), "match_pcid": Out(1), "pcid": Out(PCID_BITS),
})


# ---- walker ----------------------------------------------------------------------------------------

def walk_result_layout(cfg: MMUConfig) -> data.StructLayout:
    """What a finished walk found: a page fault with its error code, or the translation."""
    return data.StructLayout({
        "fault": 1,  # page fault (a walk never sees a non-canonical address)
        "error_code": ErrorCodeLayout,
        "paddr": cfg.maxphyaddr,
        "size": PageSize,
        "frame": cfg.maxphyaddr - 12,  # page base, bits M-1:12 (low bits cleared for 2M/1G)
        "rw": 1, "us": 1, "nx": 1,  # combined over every level read
        "dirty": 1,  # the leaf's D after the walk (D | write)
        "global_": 1,  # the leaf's G
    })


def walk_signature(cfg: MMUConfig) -> wiring.Signature:
    """Request pipeline -> walker.

    ``start`` (accepted in the walker's IDLE only) begins the walk of ``vaddr``
    for ``access``/``user`` in the address space ``pml4``/``pcid``.  ``done``
    stays high from the walk's end until ``commit`` (fill the page-walk cache,
    then ``fill_last`` pulses in the last cycle of that) or ``release``;
    ``result`` is held until the next ``start``.  ``pwc_hit`` pulses in a start
    cycle whose walk begins below PML4.
    """
    return wiring.Signature({
        "start": Out(1), "vaddr": Out(VA_BITS), "access": Out(Access), "user": Out(1),
        "pml4": Out(cfg.maxphyaddr - 12), "pcid": Out(PCID_BITS),
        "commit": Out(1), "release": Out(1),
        "done": In(1), "result": In(walk_result_layout(cfg)), "fill_last": In(1), "pwc_hit": In(1),
    })
