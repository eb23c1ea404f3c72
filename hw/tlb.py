"""One TLB (instruction or data): a set-associative 4 KiB main array plus a fully associative
superpage array (docs/reference.md, "TLB organisation").

Main array
    ``entries / ways`` sets of ``ways`` ways.  The set index is the low
    ``log2(sets)`` bits of VPN = vaddr[47:12].  With more than one set, the
    tag, frame and rights of the ways live in an ``amaranth.lib.memory.Memory``
    (one row per set, one element per way, a write enable per way) read
    synchronously: the set is read in the cycle the request is accepted
    (``rd_en``/``rd_vaddr``) and compared in the next one.  The valid, global
    and PCID bits stay in flip-flops, so flush-all, flush-by-PCID and a CR3
    write clear any number of entries in one cycle.  A fully associative main
    array (one set) keeps everything in flip-flops.
Superpage array
    ``superpage_entries`` entries, fully associative, in flip-flops; a 2 MiB
    entry compares vaddr[47:21], a 1 GiB entry vaddr[47:30].  Superpages never
    go through a set index, so no superpage is looked up with the wrong VPN bits.

Lookup (stage 1, combinational on the set read in stage 0): an entry matches
when it is valid, its tag matches for its size and it is global or of the
current PCID.  The main array wins over the superpage array and the lowest way
within an array (a priority encoder).  A match is a *hit* only if it can
complete (permissions of step 4, and dirty for a write).  ``lk_en`` commits the
lookup: a hit touches the replacement state; a match that cannot complete is
invalidated.

Fill: a valid entry of the same size and tag visible to the PCID is replaced in
place (the other matches of the lookup, remembered for the main array);
otherwise the lowest invalid way; otherwise the policy's victim (then the FIFO
pointer advances / the LFSR steps).  The filled way is touched.

Flush: ``flush_en`` clears every valid entry that satisfies all of
``~(flush_keep_global & global)``, ``~flush_match_pcid | pcid == flush_pcid | global``
and ``~flush_match_va | covers(flush_va)``.  For the main array the VA compare
uses the set read by a preceding ``rd_en`` with ``rd_vaddr = flush_va``.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.layouts import FlagsLayout
from hw.replacement import Replacement, priority_encode
from hw.walker import ACCESS_WRITE, access_allowed
from model.config import MMUConfig, TLBConfig


def main_entry_layout(tcfg: TLBConfig, maxphyaddr: int) -> data.StructLayout:
    return data.StructLayout({
        "tag": 36 - tcfg.set_bits,  # vaddr[47:12 + set bits]
        "frame": maxphyaddr - 12,  # paddr[M-1:12]
        "rw": 1, "us": 1, "nx": 1,  # combined over every level
        "dirty": 1,  # the leaf's D after the walk
    })


def superpage_entry_layout(maxphyaddr: int) -> data.StructLayout:
    return data.StructLayout({
        "giant": 1,  # 0: 2 MiB, 1: 1 GiB
        "tag": 27,  # vaddr[47:21]; a 1 GiB entry compares only [47:30]
        "frame": maxphyaddr - 21,  # paddr[M-1:21]; bits 29:21 are 0 in a 1 GiB entry
        "rw": 1, "us": 1, "nx": 1,
        "dirty": 1,
    })


def superpage_covers(entry, vaddr):
    va = vaddr[21:48]
    return Mux(entry.giant, entry.tag[9:] == va[9:], entry.tag == va)


class TLB(wiring.Component):
    def __init__(self, tcfg: TLBConfig, cfg: MMUConfig, name: str = "tlb"):
        self.tcfg = tcfg
        self.cfg = cfg
        self.tlb_name = name
        M = cfg.maxphyaddr
        self.main_layout = main_entry_layout(tcfg, M)
        self.sp_layout = superpage_entry_layout(M)
        super().__init__({
            # stage 0: read the set of rd_vaddr (a request being accepted, or a flush-by-VA)
            "rd_en": In(1), "rd_vaddr": In(48),
            # stage 1: the lookup
            "lk_vaddr": In(48), "lk_pcid": In(12), "lk_access": In(2), "lk_user": In(1),
            "flags": In(FlagsLayout),
            "lk_en": In(1),
            "matched": Out(1), "hit": Out(1), "hit_paddr": Out(M), "hit_size": Out(2),
            # fill from a successful walk
            "fill_en": In(1), "fill_vaddr": In(48), "fill_pcid": In(12), "fill_size": In(2),
            "fill_frame": In(M - 12), "fill_rw": In(1), "fill_us": In(1), "fill_nx": In(1),
            "fill_dirty": In(1), "fill_global": In(1),
            # flush
            "flush_en": In(1), "flush_keep_global": In(1), "flush_match_pcid": In(1), "flush_pcid": In(12),
            "flush_match_va": In(1), "flush_va": In(48),
        })

    def elaborate(self, platform):
        m = Module()
        t, M = self.tcfg, self.cfg.maxphyaddr
        S, W, N, sb = t.sets, t.ways, t.superpage_entries, t.set_bits
        policy, seed = t.policy, self.cfg.lfsr_seed
        nm = self.tlb_name

        m.submodules.main_repl = main_repl = Replacement(policy, S, W, seed)
        m.submodules.sp_repl = sp_repl = Replacement(policy, 1, N, seed)

        def set_of(va):
            return va[12:12 + sb]

        def tag_of(va):
            return va[12 + sb:48]

        # ================= main array =================================================
        valid = [Signal(W, name=f"{nm}_valid_s{s}") for s in range(S)]
        glob = [Signal(W, name=f"{nm}_global_s{s}") for s in range(S)]
        pcid = [[Signal(12, name=f"{nm}_pcid_s{s}w{w}") for w in range(W)] for s in range(S)]
        row_layout = data.ArrayLayout(self.main_layout, W)
        new_entry = Signal(self.main_layout, name=f"{nm}_fill_entry")

        if S > 1:
            m.submodules.main_mem = mem = Memory(shape=row_layout, depth=S, init=[])
            rp = mem.read_port(domain="sync")
            wp = mem.write_port(granularity=1)
            m.d.comb += [rp.addr.eq(set_of(self.rd_vaddr)), rp.en.eq(self.rd_en)]
            row = rp.data
        else:
            row = Signal(row_layout, name=f"{nm}_ways")
            wp = None

        # the set under comparison: the lookup's, or the flush's (flush-by-VA)
        cmp_va = Signal(48, name=f"{nm}_cmp_vaddr")
        m.d.comb += cmp_va.eq(Mux(self.flush_en & self.flush_match_va, self.flush_va, self.lk_vaddr))
        cmp_set = Signal(range(S), name=f"{nm}_cmp_set")
        m.d.comb += cmp_set.eq(set_of(cmp_va))

        set_valid = Signal(W, name=f"{nm}_set_valid")
        set_glob = Signal(W, name=f"{nm}_set_global")
        set_pcid = [Signal(12, name=f"{nm}_set_pcid_w{w}") for w in range(W)]
        m.d.comb += [set_valid.eq(Array(valid)[cmp_set]), set_glob.eq(Array(glob)[cmp_set])]
        for w in range(W):
            m.d.comb += set_pcid[w].eq(Array(pcid[s][w] for s in range(S))[cmp_set])

        tag_eq = Signal(W, name=f"{nm}_tag_eq")
        m_match = Signal(W, name=f"{nm}_main_match")
        for w in range(W):
            m.d.comb += [
                tag_eq[w].eq(row[w].tag == tag_of(cmp_va)),
                m_match[w].eq(set_valid[w] & tag_eq[w] & (set_glob[w] | (set_pcid[w] == self.lk_pcid))),
            ]
        m_way = priority_encode(m, m_match, W, f"{nm}_main_hit_way")
        m_sel = Signal(self.main_layout, name=f"{nm}_main_hit_entry")
        m.d.comb += m_sel.eq(Array(row[w] for w in range(W))[m_way])

        # ================= superpage array ============================================
        sp_valid = Signal(N, name=f"{nm}_sp_valid")
        sp_glob = Signal(N, name=f"{nm}_sp_global")
        sp_pcid = [Signal(12, name=f"{nm}_sp_pcid{i}") for i in range(N)]
        sp = [Signal(self.sp_layout, name=f"{nm}_sp{i}") for i in range(N)]
        sp_match = Signal(N, name=f"{nm}_sp_match")
        for i in range(N):
            m.d.comb += sp_match[i].eq(sp_valid[i] & superpage_covers(sp[i], self.lk_vaddr)
                                       & (sp_glob[i] | (sp_pcid[i] == self.lk_pcid)))
        sp_way = priority_encode(m, sp_match, N, f"{nm}_sp_hit_way")
        sp_sel = Signal(self.sp_layout, name=f"{nm}_sp_hit_entry")
        m.d.comb += sp_sel.eq(Array(sp)[sp_way])

        # ================= lookup outcome ==============================================
        in_main = Signal(name=f"{nm}_hit_in_main")
        m.d.comb += [in_main.eq(m_match.any()), self.matched.eq(m_match.any() | sp_match.any())]
        rw = Mux(in_main, m_sel.rw, sp_sel.rw)
        us = Mux(in_main, m_sel.us, sp_sel.us)
        nx = Mux(in_main, m_sel.nx, sp_sel.nx)
        dirty = Mux(in_main, m_sel.dirty, sp_sel.dirty)
        can_complete = Signal(name=f"{nm}_can_complete")
        m.d.comb += can_complete.eq(access_allowed(rw, us, nx, self.lk_access, self.lk_user, self.flags)
                                    & ((self.lk_access != ACCESS_WRITE) | dirty))
        m.d.comb += self.hit.eq(self.matched & can_complete)
        va = self.lk_vaddr
        sp_paddr = Mux(sp_sel.giant, Cat(va[:30], sp_sel.frame[9:]), Cat(va[:21], sp_sel.frame))
        m.d.comb += [
            self.hit_paddr.eq(Mux(in_main, Cat(va[:12], m_sel.frame), sp_paddr)),
            self.hit_size.eq(Mux(in_main, 0, Mux(sp_sel.giant, 2, 1))),
        ]

        lk_set = set_of(self.lk_vaddr)
        # the other main-array matches of the last lookup: a fill replaces the lowest of them in place
        others = Signal(W, name=f"{nm}_main_other_matches")
        blocked_main = Signal(name=f"{nm}_invalidate_main")  # commit: drop the match that cannot complete
        blocked_sp = Signal(name=f"{nm}_invalidate_sp")
        with m.If(self.lk_en):
            m.d.sync += others.eq(m_match & ~(Const(1, W) << m_way)[:W])
            with m.If(self.hit):
                with m.If(in_main):
                    m.d.comb += [main_repl.touch.eq(1), main_repl.set.eq(lk_set), main_repl.way.eq(m_way)]
                with m.Else():
                    m.d.comb += [sp_repl.touch.eq(1), sp_repl.way.eq(sp_way)]
            with m.Elif(self.matched):
                m.d.comb += [blocked_main.eq(in_main), blocked_sp.eq(~in_main)]

        # ================= fill =========================================================
        fill_main = Signal(name=f"{nm}_fill_main")
        fill_sp = Signal(name=f"{nm}_fill_sp")
        m.d.comb += [fill_main.eq(self.fill_en & (self.fill_size == 0)),
                     fill_sp.eq(self.fill_en & (self.fill_size != 0))]
        fset = Signal(range(S), name=f"{nm}_fill_set")
        m.d.comb += fset.eq(set_of(self.fill_vaddr))

        # main array: in place, else lowest invalid, else victim
        f_valid = Signal(W, name=f"{nm}_fill_set_valid")
        m.d.comb += f_valid.eq(Array(valid)[fset])
        f_invalid = Signal(W, name=f"{nm}_fill_set_invalid")
        m.d.comb += f_invalid.eq(~f_valid)
        f_inplace_way = priority_encode(m, others, W, f"{nm}_fill_inplace_way")
        f_invalid_way = priority_encode(m, f_invalid, W, f"{nm}_fill_invalid_way")
        f_way = Signal(range(W), name=f"{nm}_fill_way")
        m.d.comb += f_way.eq(Mux(others.any(), f_inplace_way, Mux(f_invalid.any(), f_invalid_way, main_repl.victim)))
        m.d.comb += [
            new_entry.tag.eq(tag_of(self.fill_vaddr)), new_entry.frame.eq(self.fill_frame),
            new_entry.rw.eq(self.fill_rw), new_entry.us.eq(self.fill_us), new_entry.nx.eq(self.fill_nx),
            new_entry.dirty.eq(self.fill_dirty),
        ]
        with m.If(fill_main):
            m.d.comb += [main_repl.set.eq(fset), main_repl.touch.eq(1), main_repl.way.eq(f_way),
                         main_repl.advance.eq(~others.any() & ~f_invalid.any())]
            if wp is not None:
                m.d.comb += [wp.addr.eq(fset), wp.en.eq((Const(1, W) << f_way)[:W])]
                for w in range(W):
                    m.d.comb += wp.data[w].eq(new_entry)
            else:
                for w in range(W):
                    with m.If(f_way == w):
                        m.d.sync += row[w].eq(new_entry)

        # superpage array
        giant = self.fill_size == 2
        same = Signal(N, name=f"{nm}_sp_fill_same")
        for i in range(N):
            tag_ok = Mux(giant, sp[i].tag[9:] == self.fill_vaddr[30:48], sp[i].tag == self.fill_vaddr[21:48])
            m.d.comb += same[i].eq(sp_valid[i] & (sp[i].giant == giant) & tag_ok
                                   & (sp_glob[i] | (sp_pcid[i] == self.fill_pcid)))
        sp_invalid = Signal(N, name=f"{nm}_sp_invalid")
        m.d.comb += sp_invalid.eq(~sp_valid)
        s_inplace = priority_encode(m, same, N, f"{nm}_sp_fill_inplace_way")
        s_invalid = priority_encode(m, sp_invalid, N, f"{nm}_sp_fill_invalid_way")
        s_way = Signal(range(N), name=f"{nm}_sp_fill_way")
        m.d.comb += s_way.eq(Mux(same.any(), s_inplace, Mux(sp_invalid.any(), s_invalid, sp_repl.victim)))
        new_sp = Signal(self.sp_layout, name=f"{nm}_sp_fill_entry")
        m.d.comb += [
            new_sp.giant.eq(giant), new_sp.tag.eq(self.fill_vaddr[21:48]), new_sp.frame.eq(self.fill_frame[9:]),
            new_sp.rw.eq(self.fill_rw), new_sp.us.eq(self.fill_us), new_sp.nx.eq(self.fill_nx),
            new_sp.dirty.eq(self.fill_dirty),
        ]
        with m.If(fill_sp):
            m.d.comb += [sp_repl.touch.eq(1), sp_repl.way.eq(s_way),
                         sp_repl.advance.eq(~same.any() & ~sp_invalid.any())]
            for i in range(N):
                with m.If(s_way == i):
                    m.d.sync += sp[i].eq(new_sp)

        # ================= valid / global / PCID bits ===================================
        def doomed(g, p, covers):
            return (self.flush_en & (~self.flush_keep_global | ~g)
                    & (~self.flush_match_pcid | (p == self.flush_pcid) | g)
                    & (~self.flush_match_va | covers))

        for s in range(S):
            for w in range(W):
                filled = fill_main & (fset == s) & (f_way == w)
                covers = (set_of(self.flush_va) == s) & tag_eq[w]
                dropped = (doomed(glob[s][w], pcid[s][w], covers)
                           | (blocked_main & (lk_set == s) & (m_way == w)))
                with m.If(filled):
                    m.d.sync += [valid[s][w].eq(1), glob[s][w].eq(self.fill_global), pcid[s][w].eq(self.fill_pcid)]
                with m.Elif(dropped):
                    m.d.sync += valid[s][w].eq(0)
        for i in range(N):
            filled = fill_sp & (s_way == i)
            dropped = (doomed(sp_glob[i], sp_pcid[i], superpage_covers(sp[i], self.flush_va))
                       | (blocked_sp & (sp_way == i)))
            with m.If(filled):
                m.d.sync += [sp_valid[i].eq(1), sp_glob[i].eq(self.fill_global), sp_pcid[i].eq(self.fill_pcid)]
            with m.Elif(dropped):
                m.d.sync += sp_valid[i].eq(0)
        return m
