"""The MMU top: instruction TLB, data TLB, page-walk cache and walker behind the ports of
``hw.layouts.mmu_signature`` (docs/hardware.md has the block diagram and the timing).

Request path (in order, one request at a time past stage 1)::

    req --accept--> stage 1: lookup (ITLB for fetches, DTLB for reads/writes)
                      | non-canonical: fault 2, answered now (no lookup)
                      | hit: answered now (resp.valid in the cycle after the accept);
                      |      the next request is accepted in the same cycle
                      | miss: walk.start --> WALK --> RESP --> (FILL) --> idle

- A hit answers in the cycle after the request; back-to-back hits run at one
  per cycle as long as ``resp.ready`` is high.  A response that is not taken at
  once is held in a register (state RESP); the next request is accepted in the
  cycle it is taken (unless a walk's fill must come first).
- A miss (including a match that cannot complete, which the TLB invalidates)
  blocks the request port while it walks.  The walk's answer goes out from
  RESP; when it is taken, a successful walk with no control operation accepted
  since its lookup fills the TLB that missed (in the handshake cycle) and the
  page-walk cache (FILL, one entry per cycle).

Control port ordering: an operation accepted in cycle c takes effect at the end
of c.  It is ordered after every request looked up at or before c and before
every request accepted at c or later.  An operation accepted between a missing
request's lookup (inclusive) and its response makes that walk stale: it still
answers, but fills nothing.  ``ctl.ready`` is low in RESP and FILL, so no
operation is accepted after a walk's answer is ready and before its fill is
done.  Flush-by-VA takes two cycles (read the set, then compare and clear):
ready rises in the second.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring

from hw.control import ControlDecoder
from hw.counters import Counters
from hw.layouts import (
    VA_BITS,
    mmu_signature,
    response_layout,
    tlb_fill_signature,
    tlb_lookup_signature,
    walk_signature,
)
from hw.pwc import PageWalkCache
from hw.tlb import TLB
from hw.walker import Walker
from model.config import MMUConfig
from model.x86.pte import Access, FaultKind, PageSize


class MMU(wiring.Component):
    """The MMU top (ports: :func:`hw.layouts.mmu_signature`; docs/hardware.md, "Ports", has every field).

    ``req`` (In stream: vaddr[63:0], access, user, id)
        translate requests; ``ready`` as in the request path above.
    ``resp`` (Out stream: paddr[M-1:0], fault, error_code[4:0], size, tlb_hit, id)
        one response per request, in order; paddr and size are 0 on a fault.
    ``ctl`` (In stream: op, value[63:0]); ``flags`` (In: wp, nxe, smep, smap, pcide)
        CR3 writes and flushes (the handshake acknowledges); CR0/CR4/EFER levels.
    ``mem_req`` (Out stream: addr[M-1:0], wdata[63:0], we), ``mem_resp`` (In stream: rdata[63:0])
        the walker's reads and A/D writes; reads answered in order, any latency.
    ``counters`` (Out: nine 32-bit counters, ``hw.layouts.COUNTER_NAMES``)
    """

    def __init__(self, cfg: MMUConfig):
        if not isinstance(cfg, MMUConfig):
            raise TypeError(f"MMU(cfg): expected an MMUConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        super().__init__(mmu_signature(cfg))

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg

        m.submodules.itlb = itlb = TLB(cfg.itlb, cfg, "itlb")
        m.submodules.dtlb = dtlb = TLB(cfg.dtlb, cfg, "dtlb")
        m.submodules.walker = walker = Walker(cfg)
        m.submodules.control = control = ControlDecoder(cfg)
        m.submodules.counters = counters = Counters()

        wiring.connect(m, wiring.flipped(self.ctl), control.ctl)
        wiring.connect(m, control.tlb_flush, itlb.flush, dtlb.flush)
        wiring.connect(m, walker.mem_req, wiring.flipped(self.mem_req))
        wiring.connect(m, wiring.flipped(self.mem_resp), walker.mem_resp)
        if cfg.pwc_entries:
            m.submodules.pwc = pwc = PageWalkCache(cfg)
            wiring.connect(m, walker.pwc_lookup, pwc.lookup)
            wiring.connect(m, walker.pwc_fill, pwc.fill)
            wiring.connect(m, control.pwc_flush, pwc.flush)
        m.d.comb += [control.flags.eq(self.flags), walker.flags.eq(self.flags), self.counters.eq(counters.counters)]

        # the request pipeline talks to the TLBs and the walker through interfaces of their signatures
        ilookup, dlookup = (tlb_lookup_signature(cfg).create(path=(n,)) for n in ("ilookup", "dlookup"))
        ifill, dfill = (tlb_fill_signature(cfg).create(path=(n,)) for n in ("ifill", "dfill"))
        walk = walk_signature(cfg).create(path=("walk",))
        s1 = self._stage1(m, control, ilookup, dlookup)
        self._request_fsm(m, control, s1, ifill, dfill, walk, counters.events)
        wiring.connect(m, ilookup, itlb.lookup)
        wiring.connect(m, dlookup, dtlb.lookup)
        wiring.connect(m, ifill, itlb.fill)
        wiring.connect(m, dfill, dtlb.fill)
        wiring.connect(m, walk, walker.walk)

        fire = self.mem_req.valid & self.mem_req.ready
        m.d.comb += [counters.events.mem_reads.eq(fire & ~self.mem_req.payload.we),
                     counters.events.mem_writes.eq(fire & self.mem_req.payload.we),
                     counters.events.pwc_hits.eq(walk.pwc_hit)]
        return m

    def _stage1(self, m, control, ilookup, dlookup) -> SimpleNamespace:
        """Stage 0 (accept, read the TLB sets) and stage 1 (look up, the answer it gives now)."""
        cfg = self.cfg

        # ---- stage 1: the request being looked up (and, after a miss, walked) ---------
        s1_valid = Signal(name="s1_valid")
        s1_vaddr = Signal(64, name="s1_vaddr")
        s1_access = Signal(Access, name="s1_access")
        s1_user = Signal(name="s1_user")
        s1_id = Signal(cfg.id_bits, name="s1_id")
        s1_fetch = Signal(name="s1_fetch")
        m.d.comb += s1_fetch.eq(s1_access == Access.FETCH)
        noncanonical = Signal(name="s1_noncanonical")
        top = s1_vaddr[47:]
        m.d.comb += noncanonical.eq(~((top == 0) | (top == (1 << 17) - 1)))

        req_fire = Signal(name="req_fire")
        m.d.comb += req_fire.eq(self.req.valid & self.req.ready)
        with m.If(req_fire):
            m.d.sync += [s1_vaddr.eq(self.req.payload.vaddr), s1_access.eq(self.req.payload.access),
                         s1_user.eq(self.req.payload.user), s1_id.eq(self.req.payload.id)]

        for lookup in (ilookup, dlookup):
            m.d.comb += [
                lookup.read.eq(req_fire), lookup.read_vaddr.eq(self.req.payload.vaddr[:VA_BITS]),
                lookup.vaddr.eq(s1_vaddr[:VA_BITS]), lookup.pcid.eq(control.pcid), lookup.access.eq(s1_access),
                lookup.user.eq(s1_user), lookup.flags.eq(self.flags),
            ]
        hit = Signal(name="s1_hit")
        m.d.comb += hit.eq(Mux(s1_fetch, ilookup.hit, dlookup.hit))
        answer_now = Signal(name="s1_answer_now")  # non-canonical or a completing hit
        m.d.comb += answer_now.eq(s1_valid & (noncanonical | hit))

        s1_resp = Signal(response_layout(cfg), name="s1_resp")
        m.d.comb += [
            s1_resp.id.eq(s1_id),
            s1_resp.fault.eq(Mux(noncanonical, FaultKind.NONCANONICAL, FaultKind.NONE)),
            s1_resp.tlb_hit.eq(~noncanonical),
            s1_resp.paddr.eq(Mux(noncanonical, 0, Mux(s1_fetch, ilookup.paddr, dlookup.paddr))),
            s1_resp.size.eq(Mux(noncanonical, PageSize.SIZE_4K, Mux(s1_fetch, ilookup.size, dlookup.size))),
        ]
        return SimpleNamespace(valid=s1_valid, vaddr=s1_vaddr, access=s1_access, user=s1_user, id=s1_id,
                               fetch=s1_fetch, noncanonical=noncanonical, hit=hit, answer_now=answer_now,
                               resp=s1_resp, req_fire=req_fire, ilookup=ilookup, dlookup=dlookup)

    def _request_fsm(self, m, control, s1, ifill, dfill, walk, events):
        """The request state machine (IDLE, WALK, RESP, FILL): commits the lookups, starts the walk,
        holds the response, fills the TLB that missed; the request-side counter events."""
        s1_valid, s1_vaddr, s1_access, s1_user, s1_id = s1.valid, s1.vaddr, s1.access, s1.user, s1.id
        s1_fetch, noncanonical, hit, answer_now, s1_resp, req_fire = (s1.fetch, s1.noncanonical, s1.hit,
                                                                      s1.answer_now, s1.resp, s1.req_fire)
        resp_reg = Signal(response_layout(self.cfg), name="resp_held")
        resp_from_walk = Signal(name="resp_from_walk")

        # ---- the walk and the fill it ends with ---------------------------------------------
        stale = Signal(name="walk_stale")  # a control operation was accepted during this walk
        walk_pcid = Signal(12, name="walk_pcid")  # the PCID the missing request was looked up with
        m.d.comb += [
            walk.vaddr.eq(s1_vaddr[:VA_BITS]), walk.access.eq(s1_access), walk.user.eq(s1_user),
            walk.pml4.eq(control.pml4), walk.pcid.eq(control.pcid),
        ]
        fill_tlb = Signal(name="tlb_fill")
        res = walk.result
        for fill, is_i in ((ifill, True), (dfill, False)):
            m.d.comb += [
                fill.en.eq(fill_tlb & (s1_fetch if is_i else ~s1_fetch)),
                fill.entry.vaddr.eq(s1_vaddr[:VA_BITS]), fill.entry.pcid.eq(walk_pcid),
                fill.entry.size.eq(res.size), fill.entry.frame.eq(res.frame), fill.entry.rw.eq(res.rw),
                fill.entry.us.eq(res.us), fill.entry.nx.eq(res.nx), fill.entry.dirty.eq(res.dirty),
                fill.entry.global_.eq(res.global_),
            ]

        with m.FSM(name="mmu"):
            with m.State("IDLE"):
                m.d.comb += control.open.eq(1)
                m.d.comb += self.req.ready.eq(~control.tlb_flush.prepare
                                              & (~s1_valid | (answer_now & self.resp.ready)))
                with m.If(s1_valid):
                    m.d.comb += [self.resp.valid.eq(answer_now), self.resp.payload.eq(s1_resp)]
                    with m.If(noncanonical):
                        m.d.comb += events.faults.eq(1)
                    with m.Else():
                        m.d.comb += [events.lookups.eq(1), s1.ilookup.commit.eq(s1_fetch),
                                     s1.dlookup.commit.eq(~s1_fetch)]
                        with m.If(hit):
                            m.d.comb += events.hits.eq(1)
                        with m.Else():
                            m.d.comb += [events.misses.eq(1), events.walks.eq(1), walk.start.eq(1)]
                            m.d.sync += [stale.eq(control.fire), walk_pcid.eq(control.pcid), s1_valid.eq(0)]
                            m.next = "WALK"
                    with m.If(answer_now):
                        with m.If(self.resp.ready):
                            m.d.sync += s1_valid.eq(req_fire)
                        with m.Else():
                            m.d.sync += [resp_reg.eq(s1_resp), resp_from_walk.eq(0), s1_valid.eq(0)]
                            m.next = "RESP"
                with m.Else():
                    m.d.sync += s1_valid.eq(req_fire)

            with m.State("WALK"):
                m.d.comb += [control.open.eq(1), events.walk_cycles.eq(1)]
                with m.If(control.fire):
                    m.d.sync += stale.eq(1)
                with m.If(walk.done):
                    m.d.comb += events.faults.eq(res.fault)
                    m.d.sync += [
                        resp_reg.id.eq(s1_id),
                        resp_reg.fault.eq(Mux(res.fault, FaultKind.PAGE, FaultKind.NONE)),
                        resp_reg.error_code.eq(res.error_code),
                        resp_reg.paddr.eq(Mux(res.fault, 0, res.paddr)),
                        resp_reg.size.eq(Mux(res.fault, PageSize.SIZE_4K, res.size)),
                        resp_reg.tlb_hit.eq(0),
                        resp_from_walk.eq(1),
                    ]
                    m.next = "RESP"

            with m.State("RESP"):
                m.d.comb += [self.resp.valid.eq(1), self.resp.payload.eq(resp_reg)]
                with m.If(control.fire):  # only a flush-by-VA started before can complete here
                    m.d.sync += stale.eq(1)
                will_fill = Signal(name="walk_will_fill")
                m.d.comb += will_fill.eq(resp_from_walk & ~res.fault & ~stale & ~control.fire)
                # the next request may come in with this response, unless a fill must happen first
                m.d.comb += self.req.ready.eq(self.resp.ready & ~will_fill)
                with m.If(self.resp.ready):
                    m.d.sync += s1_valid.eq(req_fire)
                    with m.If(will_fill):
                        m.d.comb += [fill_tlb.eq(1), walk.commit.eq(1)]
                        m.next = "FILL"
                    with m.Else():
                        m.d.comb += walk.release.eq(resp_from_walk)
                        m.next = "IDLE"

            with m.State("FILL"):
                # the page-walk cache takes the walk's non-leaf entries, one per cycle
                with m.If(walk.fill_last):
                    m.next = "IDLE"
