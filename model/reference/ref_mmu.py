"""The reference MMU: what the hardware must answer, request by request.

An instruction TLB and a data TLB in front of one page-walk cache and the
reference walker, wired exactly as docs/reference.md says, so that with the
same ``MMUConfig`` the scoreboard can compare paddr, fault, error code, page
size, TLB hit/miss and the walk's memory writes with the hardware's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model.config import MMUConfig
from model.reference.ref_pwc import PageWalkCache
from model.reference.ref_tlb import TLB
from model.reference.ref_walker import ControlRegs, WalkResult, access_allowed, walk
from model.x86.pte import Access, FaultKind, PageSize
from model.x86.tlbflush import CR3_NOFLUSH, CtlOp

COUNTERS = ("lookups", "hits", "misses", "walks", "mem_reads", "mem_writes", "faults", "pwc_hits")

# Enum members hoisted to module constants: looking one up on its class costs more than a TLB lookup.
_WRITE, _FETCH = Access.WRITE, Access.FETCH
_NONE, _NONCANONICAL = FaultKind.NONE, FaultKind.NONCANONICAL
_SIZE_4K = PageSize.SIZE_4K
_OFFSET_MASK = tuple(size.bytes - 1 for size in PageSize)


@dataclass(slots=True)
class Response:
    """A translate response as on the port, plus the walk behind it for the scoreboard and the explainer."""

    paddr: int  # 0 on a fault
    fault: FaultKind
    error_code: int
    size: PageSize  # SIZE_4K on a fault
    tlb_hit: bool
    id: int
    walk: WalkResult | None = None  # None on a TLB hit or a non-canonical address
    pwc_hit: bool = False  # the walk started below PML4


class RefMMU:
    """ITLB + DTLB + PWC + walker over the page tables in ``mem`` (``read64``/``write64``)."""

    def __init__(self, cfg: MMUConfig, mem, ctrl: ControlRegs = ControlRegs()) -> None:
        self.cfg = cfg
        self.mem = mem
        self.ctrl = ctrl
        self.itlb = TLB(cfg.itlb, cfg.lfsr_seed)
        self.dtlb = TLB(cfg.dtlb, cfg.lfsr_seed)
        self.pwc = PageWalkCache(cfg.pwc_entries)
        self.counters = dict.fromkeys(COUNTERS, 0)

    def translate(self, vaddr: int, access: Access, user: bool, id: int = 0, *,
                  flushes_during_walk=()) -> Response:
        """Answer one translate request.

        ``flushes_during_walk`` are the ``(CtlOp, value)`` requests the hardware
        accepted while this request was in flight: they take effect after it and
        stop its walk from filling the TLB or the PWC.
        """
        top = vaddr >> 47
        if top and top != 0x1FFFF:  # not canonical
            self.counters["faults"] += 1
            response = Response(0, _NONCANONICAL, 0, _SIZE_4K, False, id)
        else:
            response = self._translate(vaddr, access, user, id, not flushes_during_walk)
        for op, value in flushes_during_walk:
            self.ctl(op, value)
        return response

    def _translate(self, vaddr: int, access: Access, user: bool, id: int, may_fill: bool) -> Response:
        counters, ctrl = self.counters, self.ctrl
        tlb = self.itlb if access == _FETCH else self.dtlb
        pcid = ctrl.pcid
        counters["lookups"] += 1
        entry = tlb.lookup(vaddr, pcid)
        if entry is not None:
            if (access != _WRITE or entry.dirty) and access_allowed(
                    entry.writable, entry.user, entry.nx, access, user, ctrl):
                tlb.touch(entry)
                counters["hits"] += 1
                size = entry.size
                return Response(entry.frame | (vaddr & _OFFSET_MASK[size]), _NONE, 0, size, True, id)
            tlb.invalidate(entry)  # a match that cannot complete: walk the current tables instead
        counters["misses"] += 1
        counters["walks"] += 1
        start = self.pwc.lookup(vaddr, pcid)
        if start is not None:
            counters["pwc_hits"] += 1
        result = walk(self.mem, ctrl, vaddr, access, user, maxphyaddr=self.cfg.maxphyaddr, start=start)
        counters["mem_reads"] += len(result.reads)
        counters["mem_writes"] += len(result.writes)
        if result.fault is not _NONE:
            counters["faults"] += 1
            return Response(0, result.fault, result.error_code, _SIZE_4K, False, id, result, start is not None)
        if may_fill:
            tlb.fill(vaddr, pcid, result)
            self.pwc.fill(vaddr, pcid, result.nonleaf)
        return Response(result.paddr, _NONE, 0, result.size, False, id, result, start is not None)

    def ctl(self, op: CtlOp, value: int) -> None:
        """Apply one control-port request (docs/reference.md, "Flushes and CR3")."""
        op = CtlOp(op)
        tlbs = (self.itlb, self.dtlb)
        if op is CtlOp.WRITE_CR3:
            keep = bool(value & CR3_NOFLUSH) and self.ctrl.pcide
            self.ctrl = dataclasses.replace(self.ctrl, cr3=value & ~CR3_NOFLUSH)
            if keep:
                return
            if self.ctrl.pcide:
                pcid = self.ctrl.pcid
                for tlb in tlbs:
                    tlb.flush_pcid(pcid)
                self.pwc.flush_pcid(pcid)
            else:  # PCIDE = 0: every non-global TLB entry and the whole PWC, whatever PCID they carry
                for tlb in tlbs:
                    tlb.flush_all(keep_global=True)
                self.pwc.flush_all()
        elif op is CtlOp.FLUSH_ALL or op is CtlOp.FLUSH_ALL_KEEP_GLOBAL:
            for tlb in tlbs:
                tlb.flush_all(keep_global=op is CtlOp.FLUSH_ALL_KEEP_GLOBAL)
            self.pwc.flush_all()
        elif op is CtlOp.FLUSH_VA:
            pcid = self.ctrl.pcid
            for tlb in tlbs:
                tlb.flush_va(value, pcid)
            self.pwc.flush_pcid(pcid)
        else:
            pcid = value & 0xFFF
            for tlb in tlbs:
                tlb.flush_pcid(pcid)
            self.pwc.flush_pcid(pcid)

    def set_flags(self, *, wp: bool | None = None, nxe: bool | None = None, smep: bool | None = None,
                  smap: bool | None = None, pcide: bool | None = None) -> None:
        """Change CR0.WP, EFER.NXE, CR4.SMEP/SMAP/PCIDE; None keeps a flag.  Nothing is flushed."""
        given = {"wp": wp, "nxe": nxe, "smep": smep, "smap": smap, "pcide": pcide}
        self.ctrl = dataclasses.replace(self.ctrl, **{k: bool(v) for k, v in given.items() if v is not None})

    def write_cr3(self, cr3: int, *, noflush: bool = False) -> None:
        self.ctl(CtlOp.WRITE_CR3, cr3 | (CR3_NOFLUSH if noflush else 0))

    def invlpg(self, vaddr: int) -> None:
        self.ctl(CtlOp.FLUSH_VA, vaddr)
