"""The control decoder: CR3 and the flushes of the MMU's ``ctl`` port (docs/hardware.md, "Control port")."""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.layouts import PCID_BITS, FlagsLayout, PWCFlushSignature, TLBFlushSignature, ctl_layout, fields_eq
from model.config import MMUConfig
from model.x86.tlbflush import CtlOp


class ControlDecoder(wiring.Component):
    """Holds CR3 and turns each accepted control operation into TLB and page-walk-cache flushes.

    Ports:

    ``ctl`` (In stream: op (CtlOp), value[63:0])
        the MMU top's control port.  The handshake is the acknowledge: an
        operation accepted in cycle c takes effect at the end of c.  ``ready`` is
        high while ``open`` is, except FLUSH_VA, which takes two cycles: the
        first (``tlb_flush.prepare``) reads the VA's set, ``ready`` rises in the
        second.  Op codes 5..7 are acknowledged and do nothing.
    ``flags`` (In, FlagsLayout)
        PCIDE decides the current PCID and the CR3 no-flush bit.
    ``open`` (In, 1)
        the request pipeline lets operations in this cycle.
    ``fire`` (Out, 1)
        an operation is accepted this cycle.
    ``pml4`` (Out, M-12), ``pcid`` (Out, 12)
        CR3[M-1:12]; the current PCID: CR3[11:0] with PCIDE, else 0.
    ``tlb_flush`` (Out, :data:`hw.layouts.TLBFlushSignature`), ``pwc_flush`` (Out, :data:`hw.layouts.PWCFlushSignature`)
        what the accepted operation drops, in its cycle (both TLBs take the same).
    """

    def __init__(self, cfg: MMUConfig):
        self.cfg = cfg
        super().__init__({
            "ctl": In(stream.Signature(ctl_layout(cfg))),
            "flags": In(FlagsLayout),
            "open": In(1),
            "fire": Out(1),
            "pml4": Out(cfg.maxphyaddr - 12),
            "pcid": Out(PCID_BITS),
            "tlb_flush": Out(TLBFlushSignature),
            "pwc_flush": Out(PWCFlushSignature),
        })

    def elaborate(self, platform):
        m = Module()
        M = self.cfg.maxphyaddr
        flags, ctl = self.flags, self.ctl
        op, value = ctl.payload.op, ctl.payload.value
        tlb, pwc = self.tlb_flush, self.pwc_flush

        cr3 = Signal(M, name="cr3")  # [M-1:12] PML4 base, [11:0] PCID
        m.d.comb += [self.pml4.eq(cr3[12:]), self.pcid.eq(Mux(flags.pcide, cr3[:12], 0))]

        fv_phase = Signal(name="flush_va_compare")  # flush-by-VA: the set was read last cycle
        is_fv = op == CtlOp.FLUSH_VA
        m.d.comb += [
            tlb.prepare.eq(ctl.valid & is_fv & ~fv_phase & self.open),
            ctl.ready.eq(Mux(is_fv, fv_phase, self.open & ~fv_phase)),
            self.fire.eq(ctl.valid & ctl.ready),
        ]
        with m.If(tlb.prepare):
            m.d.sync += fv_phase.eq(1)
        with m.Elif(fv_phase & ctl.valid):
            m.d.sync += fv_phase.eq(0)

        new_pcid = Signal(PCID_BITS, name="ctl_new_pcid")
        m.d.comb += [new_pcid.eq(Mux(flags.pcide, value[:12], 0)), tlb.which.va.eq(value[:48])]
        with m.If(self.fire):
            with m.Switch(op):
                with m.Case(CtlOp.WRITE_CR3):
                    m.d.sync += cr3.eq(value[:M])
                    with m.If(~(flags.pcide & value[63])):
                        m.d.comb += [tlb.en.eq(1), *fields_eq(tlb.which, keep_global=1, match_pcid=flags.pcide,
                                                              pcid=new_pcid),
                                     pwc.en.eq(1), pwc.match_pcid.eq(flags.pcide), pwc.pcid.eq(new_pcid)]
                with m.Case(CtlOp.FLUSH_ALL):
                    m.d.comb += [tlb.en.eq(1), pwc.en.eq(1)]
                with m.Case(CtlOp.FLUSH_ALL_KEEP_GLOBAL):
                    m.d.comb += [tlb.en.eq(1), tlb.which.keep_global.eq(1), pwc.en.eq(1)]
                with m.Case(CtlOp.FLUSH_VA):
                    m.d.comb += [tlb.en.eq(1), *fields_eq(tlb.which, match_pcid=1, pcid=self.pcid, match_va=1),
                                 pwc.en.eq(1), pwc.match_pcid.eq(1), pwc.pcid.eq(self.pcid)]
                with m.Case(CtlOp.FLUSH_PCID):
                    m.d.comb += [tlb.en.eq(1), *fields_eq(tlb.which, keep_global=1, match_pcid=1, pcid=value[:12]),
                                 pwc.en.eq(1), pwc.match_pcid.eq(1), pwc.pcid.eq(value[:12])]
                # other op codes: acknowledged, no effect
        return m
