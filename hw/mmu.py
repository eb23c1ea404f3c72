"""The MMU top: instruction TLB, data TLB, page-walk cache and walker behind the ports of
``hw.layouts.mmu_signature`` (docs/hardware.md has the block diagram and the timing).

Request path (in order, one request at a time past stage 1)::

    req --accept--> stage 1: lookup (ITLB for fetches, DTLB for reads/writes)
                      | non-canonical: fault 2, answered now (no lookup)
                      | hit: answered now (resp.valid in the cycle after the accept);
                      |      the next request is accepted in the same cycle
                      | miss: walker.start --> WALK --> RESP --> (FILL) --> idle

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

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring

from hw.layouts import COUNTER_NAMES, mmu_signature, response_layout
from hw.tlb import TLB
from hw.walker import ACCESS_FETCH, Walker
from model.config import MMUConfig
from model.x86.tlbflush import CtlOp

FAULT_NONE, FAULT_PAGE, FAULT_NONCANONICAL = 0, 1, 2


class MMU(wiring.Component):
    def __init__(self, cfg: MMUConfig):
        if not isinstance(cfg, MMUConfig):
            raise TypeError(f"MMU(cfg): expected an MMUConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        super().__init__(mmu_signature(cfg))

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        M = cfg.maxphyaddr
        flags = self.flags

        m.submodules.itlb = itlb = TLB(cfg.itlb, cfg, "itlb")
        m.submodules.dtlb = dtlb = TLB(cfg.dtlb, cfg, "dtlb")
        m.submodules.walker = walker = Walker(cfg)
        tlbs = (itlb, dtlb)

        wiring.connect(m, walker.mem_req, wiring.flipped(self.mem_req))
        wiring.connect(m, wiring.flipped(self.mem_resp), walker.mem_resp)
        m.d.comb += walker.flags.eq(flags)

        # ---- architectural state -----------------------------------------------------
        cr3 = Signal(M, name="cr3")  # [M-1:12] PML4 base, [11:0] PCID
        cur_pcid = Signal(12, name="cur_pcid")
        m.d.comb += cur_pcid.eq(Mux(flags.pcide, cr3[:12], 0))

        # ---- stage 1: the request being looked up (and, after a miss, walked) ---------
        s1_valid = Signal(name="s1_valid")
        s1_vaddr = Signal(64, name="s1_vaddr")
        s1_access = Signal(2, name="s1_access")
        s1_user = Signal(name="s1_user")
        s1_id = Signal(cfg.id_bits, name="s1_id")
        s1_fetch = Signal(name="s1_fetch")
        m.d.comb += s1_fetch.eq(s1_access == ACCESS_FETCH)
        noncanonical = Signal(name="s1_noncanonical")
        top = s1_vaddr[47:]
        m.d.comb += noncanonical.eq(~((top == 0) | (top == (1 << 17) - 1)))

        for tlb in tlbs:
            m.d.comb += [
                tlb.lk_vaddr.eq(s1_vaddr[:48]), tlb.lk_pcid.eq(cur_pcid), tlb.lk_access.eq(s1_access),
                tlb.lk_user.eq(s1_user), tlb.flags.eq(flags),
            ]
        hit = Signal(name="s1_hit")
        m.d.comb += hit.eq(Mux(s1_fetch, itlb.hit, dtlb.hit))
        answer_now = Signal(name="s1_answer_now")  # non-canonical or a completing hit
        m.d.comb += answer_now.eq(s1_valid & (noncanonical | hit))

        s1_resp = Signal(response_layout(cfg), name="s1_resp")
        m.d.comb += [
            s1_resp.id.eq(s1_id),
            s1_resp.fault.eq(Mux(noncanonical, FAULT_NONCANONICAL, FAULT_NONE)),
            s1_resp.tlb_hit.eq(~noncanonical),
            s1_resp.paddr.eq(Mux(noncanonical, 0, Mux(s1_fetch, itlb.hit_paddr, dtlb.hit_paddr))),
            s1_resp.size.eq(Mux(noncanonical, 0, Mux(s1_fetch, itlb.hit_size, dtlb.hit_size))),
        ]
        resp_reg = Signal(response_layout(cfg), name="resp_held")
        resp_from_walk = Signal(name="resp_from_walk")

        # ---- control port ------------------------------------------------------------
        op = self.ctl.payload.op
        value = self.ctl.payload.value
        ctl_open = Signal(name="ctl_open")  # the request side lets control operations in (IDLE, WALK)
        fv_phase = Signal(name="flush_va_compare")  # flush-by-VA: the set was read last cycle
        fv_start = Signal(name="flush_va_read")
        is_fv = op == CtlOp.FLUSH_VA
        m.d.comb += [
            fv_start.eq(self.ctl.valid & is_fv & ~fv_phase & ctl_open),
            self.ctl.ready.eq(Mux(is_fv, fv_phase, ctl_open & ~fv_phase)),
        ]
        with m.If(fv_start):
            m.d.sync += fv_phase.eq(1)
        with m.Elif(fv_phase & self.ctl.valid):
            m.d.sync += fv_phase.eq(0)
        ctl_fire = Signal(name="ctl_fire")
        m.d.comb += ctl_fire.eq(self.ctl.valid & self.ctl.ready)

        new_pcid = Signal(12, name="ctl_new_pcid")
        m.d.comb += new_pcid.eq(Mux(flags.pcide, value[:12], 0))
        # what a flush drops (hw/tlb.py: TLB.flush_*; hw/pwc.py: PageWalkCache.flush_*)
        t_en = Signal(name="tlb_flush_en")
        t_keep = Signal(name="tlb_flush_keep_global")
        t_mpcid = Signal(name="tlb_flush_match_pcid")
        t_pcid = Signal(12, name="tlb_flush_pcid")
        t_mva = Signal(name="tlb_flush_match_va")
        p_en = Signal(name="pwc_flush_en")
        p_mpcid = Signal(name="pwc_flush_match_pcid")
        p_pcid = Signal(12, name="pwc_flush_pcid")
        with m.If(ctl_fire):
            with m.Switch(op):
                with m.Case(CtlOp.WRITE_CR3):
                    m.d.sync += cr3.eq(value[:M])
                    with m.If(~(flags.pcide & value[63])):
                        m.d.comb += [t_en.eq(1), t_keep.eq(1), t_mpcid.eq(flags.pcide), t_pcid.eq(new_pcid),
                                     p_en.eq(1), p_mpcid.eq(flags.pcide), p_pcid.eq(new_pcid)]
                with m.Case(CtlOp.FLUSH_ALL):
                    m.d.comb += [t_en.eq(1), p_en.eq(1)]
                with m.Case(CtlOp.FLUSH_ALL_KEEP_GLOBAL):
                    m.d.comb += [t_en.eq(1), t_keep.eq(1), p_en.eq(1)]
                with m.Case(CtlOp.FLUSH_VA):
                    m.d.comb += [t_en.eq(1), t_mpcid.eq(1), t_pcid.eq(cur_pcid), t_mva.eq(1),
                                 p_en.eq(1), p_mpcid.eq(1), p_pcid.eq(cur_pcid)]
                with m.Case(CtlOp.FLUSH_PCID):
                    m.d.comb += [t_en.eq(1), t_keep.eq(1), t_mpcid.eq(1), t_pcid.eq(value[:12]),
                                 p_en.eq(1), p_mpcid.eq(1), p_pcid.eq(value[:12])]
                # other op codes: acknowledged, no effect
        for tlb in tlbs:
            m.d.comb += [tlb.flush_en.eq(t_en), tlb.flush_keep_global.eq(t_keep), tlb.flush_match_pcid.eq(t_mpcid),
                         tlb.flush_pcid.eq(t_pcid), tlb.flush_match_va.eq(t_mva), tlb.flush_va.eq(value[:48])]
        m.d.comb += [walker.pwc_flush_en.eq(p_en), walker.pwc_flush_match_pcid.eq(p_mpcid),
                     walker.pwc_flush_pcid.eq(p_pcid)]

        # ---- request acceptance and the TLB set read -----------------------------------
        req_fire = Signal(name="req_fire")
        m.d.comb += req_fire.eq(self.req.valid & self.req.ready)
        for tlb in tlbs:
            m.d.comb += [tlb.rd_en.eq(req_fire | fv_start),
                         tlb.rd_vaddr.eq(Mux(fv_start, value[:48], self.req.payload.vaddr[:48]))]
        with m.If(req_fire):
            m.d.sync += [s1_vaddr.eq(self.req.payload.vaddr), s1_access.eq(self.req.payload.access),
                         s1_user.eq(self.req.payload.user), s1_id.eq(self.req.payload.id)]

        # ---- counters -------------------------------------------------------------------
        cnt = {name: Signal(32, name=f"count_{name}") for name in COUNTER_NAMES}
        inc = {name: Signal(name=f"count_{name}_inc") for name in COUNTER_NAMES}
        for name in COUNTER_NAMES:
            m.d.comb += getattr(self.counters, name).eq(cnt[name])
            with m.If(inc[name]):
                m.d.sync += cnt[name].eq(cnt[name] + 1)
        mem_fire = self.mem_req.valid & self.mem_req.ready
        m.d.comb += [
            inc["mem_reads"].eq(mem_fire & ~self.mem_req.payload.we),
            inc["mem_writes"].eq(mem_fire & self.mem_req.payload.we),
            inc["pwc_hits"].eq(walker.pwc_hit),
        ]

        # ---- the request state machine ------------------------------------------------------
        stale = Signal(name="walk_stale")  # a control operation was accepted during this walk
        m.d.comb += [
            walker.start_vaddr.eq(s1_vaddr[:48]), walker.start_access.eq(s1_access),
            walker.start_user.eq(s1_user), walker.start_pml4.eq(cr3[12:]), walker.start_pcid.eq(cur_pcid),
        ]
        fill_tlb = Signal(name="tlb_fill")
        walk_pcid = Signal(12, name="walk_pcid")  # the PCID the missing request was looked up with
        for tlb, is_i in ((itlb, True), (dtlb, False)):
            m.d.comb += [
                tlb.fill_en.eq(fill_tlb & (s1_fetch if is_i else ~s1_fetch)),
                tlb.fill_vaddr.eq(s1_vaddr[:48]), tlb.fill_pcid.eq(walk_pcid),
                tlb.fill_size.eq(walker.res_size), tlb.fill_frame.eq(walker.res_frame),
                tlb.fill_rw.eq(walker.res_rw), tlb.fill_us.eq(walker.res_us), tlb.fill_nx.eq(walker.res_nx),
                tlb.fill_dirty.eq(walker.res_dirty), tlb.fill_global.eq(walker.res_global),
            ]

        with m.FSM(name="mmu"):
            with m.State("IDLE"):
                m.d.comb += ctl_open.eq(1)
                m.d.comb += self.req.ready.eq(~fv_start & (~s1_valid | (answer_now & self.resp.ready)))
                with m.If(s1_valid):
                    m.d.comb += [self.resp.valid.eq(answer_now), self.resp.payload.eq(s1_resp)]
                    with m.If(noncanonical):
                        m.d.comb += inc["faults"].eq(1)
                    with m.Else():
                        m.d.comb += [
                            inc["lookups"].eq(1),
                            itlb.lk_en.eq(s1_fetch), dtlb.lk_en.eq(~s1_fetch),
                        ]
                        with m.If(hit):
                            m.d.comb += inc["hits"].eq(1)
                        with m.Else():
                            m.d.comb += [inc["misses"].eq(1), inc["walks"].eq(1), walker.start.eq(1)]
                            m.d.sync += [stale.eq(ctl_fire), walk_pcid.eq(cur_pcid), s1_valid.eq(0)]
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
                m.d.comb += [ctl_open.eq(1), inc["walk_cycles"].eq(1)]
                with m.If(ctl_fire):
                    m.d.sync += stale.eq(1)
                with m.If(walker.done):
                    m.d.comb += inc["faults"].eq(walker.res_fault)
                    m.d.sync += [
                        resp_reg.id.eq(s1_id),
                        resp_reg.fault.eq(Mux(walker.res_fault, FAULT_PAGE, FAULT_NONE)),
                        resp_reg.error_code.eq(walker.res_error_code),
                        resp_reg.paddr.eq(Mux(walker.res_fault, 0, walker.res_paddr)),
                        resp_reg.size.eq(Mux(walker.res_fault, 0, walker.res_size)),
                        resp_reg.tlb_hit.eq(0),
                        resp_from_walk.eq(1),
                    ]
                    m.next = "RESP"

            with m.State("RESP"):
                m.d.comb += [self.resp.valid.eq(1), self.resp.payload.eq(resp_reg)]
                with m.If(ctl_fire):  # only a flush-by-VA started before can complete here
                    m.d.sync += stale.eq(1)
                will_fill = Signal(name="walk_will_fill")
                m.d.comb += will_fill.eq(resp_from_walk & ~walker.res_fault & ~stale & ~ctl_fire)
                # the next request may come in with this response, unless a fill must happen first
                m.d.comb += self.req.ready.eq(self.resp.ready & ~will_fill)
                with m.If(self.resp.ready):
                    m.d.sync += s1_valid.eq(req_fire)
                    with m.If(will_fill):
                        m.d.comb += [fill_tlb.eq(1), walker.commit.eq(1)]
                        m.next = "FILL"
                    with m.Else():
                        m.d.comb += walker.release.eq(resp_from_walk)
                        m.next = "IDLE"

            with m.State("FILL"):
                # the page-walk cache takes the walk's non-leaf entries, one per cycle
                with m.If(walker.fill_last):
                    m.next = "IDLE"
        return m
