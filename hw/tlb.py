"""One TLB (instruction or data): a set-associative 4 KiB main array plus a fully associative
superpage array (docs/reference.md, "TLB organisation"), each a :class:`hw.cam.CAM`.

Main array
    ``entries / ways`` sets of ``ways`` ways.  The set index is the low
    ``log2(sets)`` bits of VPN = vaddr[47:12].  With more than one set, the
    tag, frame and rights of the ways live in an ``amaranth.lib.memory.Memory``
    (one row per set, one element per way, a write enable per way) read
    synchronously: the set is read in the cycle the request is accepted and
    compared in the next one.  The valid, global and PCID bits are the CAM's
    flip-flops, so flush-all, flush-by-PCID and a CR3 write clear any number of
    entries in one cycle.  A fully associative main array (one set) keeps its
    row in flip-flops too.
Superpage array
    ``superpage_entries`` entries, fully associative, all in the CAM; a 2 MiB
    entry compares vaddr[47:21], a 1 GiB entry vaddr[47:30].  Superpages never
    go through a set index, so no superpage is looked up with the wrong VPN bits.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory

from hw.cam import CAM
from hw.layouts import (
    PCID_BITS,
    VA_BITS,
    TLBFlushLayout,
    TLBFlushSignature,
    cache_signature,
    fields_eq,
    tlb_fill_signature,
    tlb_lookup_signature,
)
from hw.walker import access_allowed
from model.config import MMUConfig, TLBConfig
from model.x86.pte import Access, PageSize


def main_row_layout(tcfg: TLBConfig, maxphyaddr: int) -> data.StructLayout:
    """A main-array way as the memory holds it."""
    return data.StructLayout({
        "tag": 36 - tcfg.set_bits,  # vaddr[47:12 + set bits]
        "frame": maxphyaddr - 12,  # paddr[M-1:12]
        "rw": 1, "us": 1, "nx": 1,  # combined over every level
        "dirty": 1,  # the leaf's D after the walk
    })


# What the main array's CAM keeps of a way: what a flush or a PCID compare needs every cycle.
MainTagLayout = data.StructLayout({"global_": 1, "pcid": PCID_BITS})


def superpage_entry_layout(maxphyaddr: int) -> data.StructLayout:
    return data.StructLayout({
        "giant": 1,  # 0: 2 MiB, 1: 1 GiB
        "tag": 27,  # vaddr[47:21]; a 1 GiB entry compares only [47:30]
        "frame": maxphyaddr - 21,  # paddr[M-1:21]; bits 29:21 are 0 in a 1 GiB entry
        "rw": 1, "us": 1, "nx": 1,
        "dirty": 1,
        "global_": 1, "pcid": PCID_BITS,
    })


def superpage_covers(entry, vaddr):
    va = vaddr[21:48]
    return Mux(entry.giant, entry.tag[9:] == va[9:], entry.tag == va)


def visible(entry, pcid):
    """An entry answers in the address space ``pcid`` when it is global or of that PCID."""
    return entry.global_ | (entry.pcid == pcid)


def flush_drops(entry, which, covers):
    """The TLB flush rule (hw.layouts.TLBFlushLayout) for one entry; ``covers``: it maps ``which.va``."""
    return ((~which.keep_global | ~entry.global_)
            & (~which.match_pcid | (entry.pcid == which.pcid) | entry.global_)
            & (~which.match_va | covers))


class TLB(wiring.Component):
    """One TLB: main array (4 KiB) and superpage array (2 MiB, 1 GiB).

    Ports (hw/layouts.py; every one ``In``, i.e. driven by the MMU top except the answers):

    ``lookup`` (:func:`hw.layouts.tlb_lookup_signature`)
        stage 0: ``read`` reads the main-array set of ``read_vaddr[47:0]``
        (synchronous memory read).  Stage 1 (the next cycle), combinational on
        ``vaddr[47:0]``, ``pcid[11:0]``, ``access``, ``user`` and ``flags``:
        ``matched`` (a valid entry of this address space maps ``vaddr``),
        ``hit`` (the match can complete: step-4 permissions on the stored rights,
        and D for a write), ``paddr[M-1:0]``, ``size`` (PageSize).  The main
        array wins over the superpage array, the lowest way within an array.
        ``commit`` at the end of the cycle: a hit touches its way's replacement
        state; a match that cannot complete is invalidated.
    ``fill`` (:func:`hw.layouts.tlb_fill_signature`)
        ``en`` installs ``entry`` (vaddr, pcid, size, frame, rights, dirty,
        global) at the end of the cycle.  A valid entry of the same size and tag
        visible to the PCID is replaced in place (for the main array: the other
        matches of the last committed lookup), otherwise the lowest invalid way,
        otherwise the policy's victim.  Never in the same cycle as a commit.
    ``flush`` (:data:`hw.layouts.TLBFlushSignature`)
        ``prepare``: read the set of ``which.va`` (first cycle of a flush-by-VA;
        never together with ``lookup.read``).  ``en``: at the end of the cycle
        drop every valid entry that ``which`` selects; the main array compares
        ``which.va`` with the set read by the ``prepare`` of the cycle before.
    """

    def __init__(self, tcfg: TLBConfig, cfg: MMUConfig, name: str = "tlb"):
        self.tcfg = tcfg
        self.cfg = cfg
        self.tlb_name = name
        super().__init__(cache_signature(tlb_lookup_signature(cfg), tlb_fill_signature(cfg), TLBFlushSignature))

    def elaborate(self, platform):
        m = Module()
        t, M = self.tcfg, self.cfg.maxphyaddr
        S, W, N, sb = t.sets, t.ways, t.superpage_entries, t.set_bits
        nm = self.tlb_name
        lookup, fill, flush = self.lookup, self.fill, self.flush

        def set_of(va):
            return va[12:12 + sb]

        def tag_of(va):
            return va[12 + sb:48]

        # ================= main array: rows in a memory (or flip-flops), tags in a CAM =============
        row_layout = data.ArrayLayout(main_row_layout(t, M), W)
        if S > 1:
            m.submodules.main_mem = mem = Memory(shape=row_layout, depth=S, init=[])
            rp = mem.read_port(domain="sync")
            wp = mem.write_port(granularity=1)
            m.d.comb += [rp.addr.eq(set_of(Mux(flush.prepare, flush.which.va, lookup.read_vaddr))),
                         rp.en.eq(lookup.read | flush.prepare)]
            row = rp.data
        else:
            row = Signal(row_layout, name=f"{nm}_ways")
            wp = None

        # the way tags compared: the lookup's, or the flush's (flush-by-VA)
        cmp_va = Signal(VA_BITS, name=f"{nm}_cmp_vaddr")
        m.d.comb += cmp_va.eq(Mux(flush.en & flush.which.match_va, flush.which.va, lookup.vaddr))
        tag_eq = Signal(W, name=f"{nm}_tag_eq")
        m.d.comb += tag_eq.eq(Cat(row[w].tag == tag_of(cmp_va) for w in range(W)))

        m.submodules.main = main = CAM(
            entry=MainTagLayout, ways=W, sets=S, policy=t.policy, seed=self.cfg.lfsr_seed,
            key=data.StructLayout({"pcid": PCID_BITS, "tag_eq": W}),
            match=lambda e, k, w: k.tag_eq[w] & visible(e, k.pcid),
            flush_key=data.StructLayout({"which": TLBFlushLayout, "tag_eq": W}),
            doomed=lambda e, f, s, w: flush_drops(e, f.which, (set_of(f.which.va) == s) & f.tag_eq[w]))
        m.d.comb += [
            main.lookup.set.eq(set_of(cmp_va)), main.lookup.key.pcid.eq(lookup.pcid), main.lookup.key.tag_eq.eq(tag_eq),
            main.flush.en.eq(flush.en), main.flush.which.which.eq(flush.which), main.flush.which.tag_eq.eq(tag_eq),
        ]

        # ================= superpage array: all in a CAM ==========================================
        m.submodules.superpages = sp = CAM(
            entry=superpage_entry_layout(M), ways=N, policy=t.policy, seed=self.cfg.lfsr_seed,
            key=data.StructLayout({"vaddr": VA_BITS, "pcid": PCID_BITS}),
            match=lambda e, k, w: superpage_covers(e, k.vaddr) & visible(e, k.pcid),
            same=lambda e, new: ((e.giant == new.giant) & visible(e, new.pcid)
                                 & Mux(new.giant, e.tag[9:] == new.tag[9:], e.tag == new.tag)),
            flush_key=TLBFlushLayout,
            doomed=lambda e, f, s, w: flush_drops(e, f, superpage_covers(e, f.va)))
        m.d.comb += [sp.lookup.key.vaddr.eq(lookup.vaddr), sp.lookup.key.pcid.eq(lookup.pcid),
                     sp.flush.en.eq(flush.en), sp.flush.which.eq(flush.which)]

        # ================= lookup outcome =========================================================
        in_main = Signal(name=f"{nm}_hit_in_main")
        m.d.comb += [in_main.eq(main.lookup.hit), lookup.matched.eq(main.lookup.hit | sp.lookup.hit)]
        m_sel = row[main.lookup.way]
        sp_sel = sp.lookup.entry
        rw = Mux(in_main, m_sel.rw, sp_sel.rw)
        us = Mux(in_main, m_sel.us, sp_sel.us)
        nx = Mux(in_main, m_sel.nx, sp_sel.nx)
        dirty = Mux(in_main, m_sel.dirty, sp_sel.dirty)
        can_complete = Signal(name=f"{nm}_can_complete")
        m.d.comb += can_complete.eq(access_allowed(rw, us, nx, lookup.access, lookup.user, lookup.flags)
                                    & ((lookup.access != Access.WRITE) | dirty))
        m.d.comb += lookup.hit.eq(lookup.matched & can_complete)
        va = lookup.vaddr
        sp_paddr = Mux(sp_sel.giant, Cat(va[:30], sp_sel.frame[9:]), Cat(va[:21], sp_sel.frame))
        m.d.comb += [
            lookup.paddr.eq(Mux(in_main, Cat(va[:12], m_sel.frame), sp_paddr)),
            lookup.size.eq(Mux(in_main, PageSize.SIZE_4K, Mux(sp_sel.giant, PageSize.SIZE_1G, PageSize.SIZE_2M))),
        ]
        # commit: a hit touches its way, a match that cannot complete is dropped
        m.d.comb += [
            main.lookup.touch.eq(lookup.commit & lookup.hit & in_main),
            sp.lookup.touch.eq(lookup.commit & lookup.hit & ~in_main),
            main.lookup.drop.eq(lookup.commit & ~lookup.hit & in_main),
            sp.lookup.drop.eq(lookup.commit & ~lookup.hit & lookup.matched & ~in_main),
        ]
        # the other main-array matches of the last lookup: a fill replaces the lowest of them in place
        others = Signal(W, name=f"{nm}_main_other_matches")
        with m.If(lookup.commit):
            m.d.sync += others.eq(main.lookup.match & ~(Const(1, W) << main.lookup.way)[:W])

        # ================= fill ====================================================================
        e = fill.entry
        fill_main = Signal(name=f"{nm}_fill_main")
        fill_sp = Signal(name=f"{nm}_fill_sp")
        m.d.comb += [fill_main.eq(fill.en & (e.size == PageSize.SIZE_4K)),
                     fill_sp.eq(fill.en & (e.size != PageSize.SIZE_4K))]
        m.d.comb += [
            main.fill.en.eq(fill_main), main.fill.set.eq(set_of(e.vaddr)), main.fill.inplace.eq(others),
            main.fill.entry.global_.eq(e.global_), main.fill.entry.pcid.eq(e.pcid),
            sp.fill.en.eq(fill_sp),
            *fields_eq(sp.fill.entry, giant=e.size == PageSize.SIZE_1G, tag=e.vaddr[21:48], frame=e.frame[9:],
                       rw=e.rw, us=e.us, nx=e.nx, dirty=e.dirty, global_=e.global_, pcid=e.pcid),
        ]
        new_row = Signal(main_row_layout(t, M), name=f"{nm}_fill_entry")
        m.d.comb += fields_eq(new_row, tag=tag_of(e.vaddr), frame=e.frame, rw=e.rw, us=e.us, nx=e.nx, dirty=e.dirty)
        with m.If(fill_main):
            if wp is not None:
                m.d.comb += [wp.addr.eq(set_of(e.vaddr)), wp.en.eq((Const(1, W) << main.fill.way)[:W])]
                for w in range(W):
                    m.d.comb += wp.data[w].eq(new_row)
            else:
                m.d.sync += row[main.fill.way].eq(new_row)
        return m
