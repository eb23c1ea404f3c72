"""The hardware page walker: docs/reference.md "The walk", rule by rule.

State machine (one walk at a time; ``walk.start`` is accepted only in IDLE)::

    IDLE --start--> READ --mem_req ready--> WAIT --mem_resp valid--+
                     ^                                             |
                     +------------- table entry: next level -------+
                                                                           |
        fault (P=0, reserved bit, permissions) ---------------------------> DONE
        leaf, allowed, no A/D to write -----------------------------------> DONE
        leaf, allowed, A/D to write --> AD (one 64-bit write per entry,
                                            top-down, each on a mem_req
                                            handshake) -------------------> DONE
    DONE --release--> IDLE          (fault, or the MMU decided not to fill)
    DONE --commit---> FILL_PWC --(one PWC insert per cycle, top-down)--> IDLE

- start (IDLE): the page-walk cache is looked up in the cycle of ``start``
  (the TLB lookup's cycle); the deepest matching entry of the walk's PCID gives
  the level to start at, the table base and the combined R/W, U/S, XD so far.
- READ/WAIT: one read of 8 bytes per level, address = table base + 8 * index.
  With a DRAM answering L >= 1 cycles after the request handshake, a level costs
  L + 1 cycles: the READ cycle (handshake), then L cycles in WAIT, the last of
  which takes the entry and checks it (through a ``PTELayout`` view).
- At each level, in this order: P = 0 faults (error code P=0); a reserved bit
  (M..51, XD with NXE = 0, PS in a PML4E, 20:13 in a 2 MiB leaf, 29:13 in a
  1 GiB leaf) faults with P=1, RSVD=1; PS in a PDPTE/PDE or level PT is the leaf.
- At the leaf the combined permissions are checked (:func:`access_allowed`).
- A faulting walk writes nothing and fills nothing.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.layouts import (
    VA_BITS,
    FlagsLayout,
    MemRespLayout,
    PTELayout,
    fields_eq,
    mem_req_layout,
    pwc_fill_signature,
    pwc_lookup_signature,
    walk_signature,
)
from model.config import MMUConfig
from model.x86.pte import Access, Level


def access_allowed(rw, us, nx, access, user, flags):
    """Step 4 of the walk on combined rights (``rw``: R/W at every level, ``us``: U/S at every
    level, ``nx``: XD at any level).  Used by the walker at the leaf and by the TLB on a match."""
    is_write = access == Access.WRITE
    is_fetch = access == Access.FETCH
    fetch_ok = ~(flags.nxe & nx) & Mux(user, us, ~(flags.smep & us))
    data_ok = Mux(user, us & (rw | ~is_write), ~(flags.smap & us) & (rw | ~is_write | ~flags.wp))
    return Mux(is_fetch, fetch_ok, data_ok)


def error_code(access, user, flags, *, present, rsvd):
    """Page-fault error code (SDM 4.7, ``ErrorCodeLayout``): P, W/R, U/S, RSVD, I/D = fetch and (NXE or SMEP)."""
    is_fetch = access == Access.FETCH
    return Cat(present | rsvd, access == Access.WRITE, user, rsvd, is_fetch & (flags.nxe | flags.smep))


class Walker(wiring.Component):
    """The four-level page walker, its memory master and the page-walk cache's only client.

    Ports:

    ``walk`` (In, :func:`hw.layouts.walk_signature`; from the MMU top)
        ``start`` (IDLE only) with ``vaddr[47:0]``, ``access``, ``user``,
        ``pml4[M-13:0]`` (CR3[M-1:12]) and ``pcid[11:0]``, latched in that cycle.
        ``done`` (out) is high from the walk's end until ``commit`` or
        ``release``; ``result`` (out) holds fault, error code, paddr, size,
        frame, combined rights, dirty and global from DONE until the next start.
        ``commit`` fills the page-walk cache (FILL_PWC, one insert per cycle;
        ``fill_last`` (out) marks the last cycle, at least one); ``release``
        returns to IDLE.  ``pwc_hit`` (out) pulses in a start cycle whose walk
        begins below PML4.
    ``flags`` (In, FlagsLayout)
        WP, NXE, SMEP, SMAP (levels; PCIDE is the MMU top's business).
    ``mem_req`` (Out stream: addr[M-1:0], wdata[63:0], we), ``mem_resp`` (In stream: rdata[63:0])
        one read per level (READ: valid until the handshake; WAIT: ready until
        the data), then the A/D writes (AD: one per handshake).  At most one
        read outstanding; the data are taken in order.
    ``pwc_lookup`` (Out, :func:`hw.layouts.pwc_lookup_signature`)
        ``vaddr``/``pcid`` follow ``walk``; ``commit`` in the start cycle.
    ``pwc_fill`` (Out, :func:`hw.layouts.pwc_fill_signature`)
        in FILL_PWC, one non-leaf entry read from DRAM per cycle, top-down.
        Without a page-walk cache (``cfg.pwc_entries == 0``) these two stay
        unconnected: no lookup hits, FILL_PWC lasts one cycle.
    """

    def __init__(self, cfg: MMUConfig):
        self.cfg = cfg
        super().__init__({
            "walk": In(walk_signature(cfg)),
            "flags": In(FlagsLayout),
            "mem_req": Out(stream.Signature(mem_req_layout(cfg))),
            "mem_resp": In(stream.Signature(MemRespLayout)),
            "pwc_lookup": Out(pwc_lookup_signature(cfg)),
            "pwc_fill": Out(pwc_fill_signature(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        M = cfg.maxphyaddr
        flags, walk, result = self.flags, self.walk, self.walk.result
        pwc_lookup, pwc_fill = self.pwc_lookup, self.pwc_fill

        # --- the walk's registers --------------------------------------------------------
        vaddr = Signal(VA_BITS, name="walk_vaddr")
        access = Signal(Access, name="walk_access")
        user = Signal(name="walk_user")
        pcid = Signal(12, name="walk_pcid")
        level = Signal(3, name="walk_level")  # 4 PML4 .. 1 PT: the level being read
        table = Signal(M - 12, name="walk_table")  # base of the table being read
        rw = Signal(name="walk_rw")  # combined over the levels so far
        us = Signal(name="walk_us")
        nx = Signal(name="walk_nx")
        # per level (index = level - 1): entry read, its address, the combined rights down to it
        ent = [Signal(PTELayout, name=f"walk_entry_l{lv}") for lv in (1, 2, 3, 4)]
        ent_addr = [Signal(M, name=f"walk_entry_addr_l{lv}") for lv in (1, 2, 3, 4)]
        lvl_rw = [Signal(name=f"walk_rw_l{lv}") for lv in (1, 2, 3, 4)]
        lvl_us = [Signal(name=f"walk_us_l{lv}") for lv in (1, 2, 3, 4)]
        lvl_xd = [Signal(name=f"walk_xd_l{lv}") for lv in (1, 2, 3, 4)]
        leaf_level = Signal(3, name="walk_leaf_level")
        ad_pending = Signal(4, name="walk_ad_pending")  # bit level-1: an A/D write is due
        pwc_pending = Signal(4, name="walk_pwc_pending")  # bit level-1: a PWC insert is due

        res_fault = Signal(name="res_fault")
        res_ec = Signal(5, name="res_error_code")
        res_paddr = Signal(M, name="res_paddr")
        res_size = Signal(2, name="res_size")
        res_frame = Signal(M - 12, name="res_frame")
        res_dirty = Signal(name="res_dirty")
        res_global = Signal(name="res_global")
        m.d.comb += fields_eq(result, fault=res_fault, error_code=res_ec, paddr=res_paddr, size=res_size,
                              frame=res_frame, rw=rw, us=us, nx=nx, dirty=res_dirty, global_=res_global)

        # --- page-walk cache lookup: in the start cycle, on the start's address space ---------
        m.d.comb += [pwc_lookup.vaddr.eq(walk.vaddr), pwc_lookup.pcid.eq(walk.pcid)]
        cached = pwc_lookup.entry

        # --- the entry being read, decoded -------------------------------------------------
        index = Signal(9, name="walk_index")
        m.d.comb += index.eq(Array(vaddr[12 + 9 * i: 21 + 9 * i] for i in range(4))[level - 1])
        read_addr = Signal(M, name="walk_read_addr")
        m.d.comb += read_addr.eq(Cat(Const(0, 3), index, table))

        pte = Signal(PTELayout, name="walk_value")
        m.d.comb += pte.eq(self.mem_resp.payload.rdata)
        addr = pte.addr  # bits 12..51 of the entry: addr[k] is entry bit 12 + k
        is_leaf = Signal(name="walk_is_leaf")
        m.d.comb += is_leaf.eq((level == 1) | ((level != 4) & pte.ps))
        rsvd = Signal(name="walk_rsvd")
        rsvd_terms = [~flags.nxe & pte.xd, (level == 4) & pte.ps,
                      is_leaf & (level == 2) & addr[1:9].any(),  # bits 20:13 of a 2 MiB leaf
                      is_leaf & (level == 3) & addr[1:18].any()]  # bits 29:13 of a 1 GiB leaf
        if M < 52:
            rsvd_terms.append(addr[M - 12:].any())  # bits 51:M
        m.d.comb += rsvd.eq(Cat(*rsvd_terms).any())
        new_rw = Signal(name="walk_new_rw")
        new_us = Signal(name="walk_new_us")
        new_nx = Signal(name="walk_new_nx")
        m.d.comb += [new_rw.eq(rw & pte.rw), new_us.eq(us & pte.us), new_nx.eq(nx | pte.xd)]
        allowed = Signal(name="walk_allowed")
        m.d.comb += allowed.eq(access_allowed(new_rw, new_us, new_nx, access, user, flags))
        is_write = access == Access.WRITE

        # A/D writes due at the leaf: every entry read from DRAM (read_mask) lacking A, the leaf
        # lacking D on a write.  ent[] of the levels above hold what was read.
        read_mask = Signal(4, name="walk_read_mask")  # bit level-1: read from DRAM in this walk
        ad_due = Signal(4, name="walk_ad_due")
        for i in range(4):
            lv = i + 1
            above = read_mask[i] & ~ent[i].a
            here = (level == lv) & (~pte.a | (is_write & ~pte.d))
            m.d.comb += ad_due[i].eq(Mux(level == lv, here, Mux(level < lv, above, 0)))

        # frame of the leaf, with the page-offset bits cleared
        frame = Signal(M - 12, name="walk_leaf_frame")
        page = addr[:M - 12]
        m.d.comb += frame.eq(Mux(level == 3, Cat(Const(0, 18), page[18:]),
                                 Mux(level == 2, Cat(Const(0, 9), page[9:]), page)))
        offset = Signal(30, name="walk_offset")
        m.d.comb += offset.eq(Mux(level == 3, vaddr[:30], Mux(level == 2, vaddr[:21], vaddr[:12])))

        # --- memory request ----------------------------------------------------------------
        ad_level = Signal(3, name="walk_ad_level")  # highest pending A/D write
        m.d.comb += ad_level.eq(Mux(ad_pending[3], 4, Mux(ad_pending[2], 3, Mux(ad_pending[1], 2, 1))))
        ad_old = Signal(PTELayout, name="walk_ad_old")
        m.d.comb += ad_old.eq(Array(ent)[ad_level - 1])
        ad_new = Signal(PTELayout, name="walk_ad_new")
        m.d.comb += [ad_new.eq(ad_old), ad_new.a.eq(1),
                     ad_new.d.eq(ad_old.d | (is_write & (ad_level == leaf_level)))]

        fill_level = Signal(3, name="walk_pwc_fill_level")
        m.d.comb += fill_level.eq(Mux(pwc_pending[3], Level.PML4, Mux(pwc_pending[2], Level.PDPT, Level.PD)))

        with m.FSM(name="walker"):
            with m.State("IDLE"):
                with m.If(walk.start):
                    # The page-walk cache is looked up in the start cycle (the TLB lookup's cycle), so a
                    # control operation accepted in that cycle takes effect after this walk's lookup.
                    m.d.comb += pwc_lookup.commit.eq(1)
                    m.d.sync += [
                        vaddr.eq(walk.vaddr), access.eq(walk.access), user.eq(walk.user), pcid.eq(walk.pcid),
                        read_mask.eq(0), ad_pending.eq(0), pwc_pending.eq(0),
                    ]
                    with m.If(pwc_lookup.hit):
                        m.d.comb += walk.pwc_hit.eq(1)
                        m.d.sync += [level.eq(cached.level - 1), table.eq(cached.base),
                                     rw.eq(cached.rw), us.eq(cached.us), nx.eq(cached.xd)]
                    with m.Else():
                        m.d.sync += [level.eq(Level.PML4), table.eq(walk.pml4), rw.eq(1), us.eq(1), nx.eq(0)]
                    m.next = "READ"

            with m.State("READ"):
                m.d.comb += [
                    self.mem_req.valid.eq(1),
                    self.mem_req.payload.addr.eq(read_addr),
                    self.mem_req.payload.we.eq(0),
                ]
                with m.If(self.mem_req.ready):
                    for i in range(4):
                        with m.If(level == i + 1):
                            m.d.sync += ent_addr[i].eq(read_addr)
                    m.next = "WAIT"

            with m.State("WAIT"):
                m.d.comb += self.mem_resp.ready.eq(1)
                with m.If(self.mem_resp.valid):
                    for i in range(4):
                        with m.If(level == i + 1):
                            m.d.sync += [ent[i].eq(pte), read_mask[i].eq(1),
                                         lvl_rw[i].eq(new_rw), lvl_us[i].eq(new_us), lvl_xd[i].eq(new_nx)]
                    m.d.sync += [rw.eq(new_rw), us.eq(new_us), nx.eq(new_nx)]
                    with m.If(~pte.p):
                        m.d.sync += [res_fault.eq(1),
                                     res_ec.eq(error_code(access, user, flags, present=0, rsvd=0))]
                        m.next = "DONE"
                    with m.Elif(rsvd):
                        m.d.sync += [res_fault.eq(1),
                                     res_ec.eq(error_code(access, user, flags, present=1, rsvd=1))]
                        m.next = "DONE"
                    with m.Elif(is_leaf):
                        with m.If(~allowed):
                            m.d.sync += [res_fault.eq(1),
                                         res_ec.eq(error_code(access, user, flags, present=1, rsvd=0))]
                            m.next = "DONE"
                        with m.Else():
                            m.d.sync += [
                                res_fault.eq(0), res_ec.eq(0),
                                res_frame.eq(frame), res_paddr.eq(Cat(Const(0, 12), frame) | offset),
                                res_size.eq(level - 1),  # PageSize: 4K at PT, 2M at PD, 1G at PDPT
                                res_dirty.eq(pte.d | is_write), res_global.eq(pte.g),
                                leaf_level.eq(level),
                                ad_pending.eq(ad_due),
                                # non-leaf entries read from DRAM: the levels above the leaf
                                pwc_pending.eq(Cat(Const(0, 1),
                                                   read_mask[1] & (level < 2),
                                                   read_mask[2] & (level < 3),
                                                   read_mask[3])),
                            ]
                            with m.If(ad_due.any()):
                                m.next = "AD"
                            with m.Else():
                                m.next = "DONE"
                    with m.Else():
                        m.d.sync += [table.eq(page), level.eq(level - 1)]
                        m.next = "READ"

            with m.State("AD"):
                m.d.comb += [
                    self.mem_req.valid.eq(1),
                    self.mem_req.payload.addr.eq(Array(ent_addr)[ad_level - 1]),
                    self.mem_req.payload.wdata.eq(ad_new),
                    self.mem_req.payload.we.eq(1),
                ]
                with m.If(self.mem_req.ready):
                    rest = Signal(4, name="walk_ad_rest")
                    m.d.comb += rest.eq(Cat(*(ad_pending[i] & (ad_level != i + 1) for i in range(4))))
                    m.d.sync += ad_pending.eq(rest)
                    with m.If(~rest.any()):
                        m.next = "DONE"

            with m.State("DONE"):
                m.d.comb += walk.done.eq(1)
                with m.If(walk.commit):
                    m.next = "FILL_PWC"
                with m.Elif(walk.release):
                    m.next = "IDLE"

            with m.State("FILL_PWC"):
                # one insert per cycle, top-down: PML4E, PDPTE, PDE (those read from DRAM)
                rest = Signal(4, name="walk_pwc_rest")
                m.d.comb += rest.eq(Cat(*(pwc_pending[i] & (fill_level != i + 1) for i in range(4))))
                if cfg.pwc_entries:
                    with m.If(pwc_pending.any()):
                        m.d.comb += [pwc_fill.en.eq(1), *fields_eq(
                            pwc_fill.entry, level=fill_level, pcid=pcid, prefix=vaddr[21:48],
                            base=Array(e.addr[:M - 12] for e in ent)[fill_level - 1],
                            rw=Array(lvl_rw)[fill_level - 1], us=Array(lvl_us)[fill_level - 1],
                            xd=Array(lvl_xd)[fill_level - 1])]
                    m.d.sync += pwc_pending.eq(rest)
                    with m.If(~rest.any()):
                        m.d.comb += walk.fill_last.eq(1)
                        m.next = "IDLE"
                else:
                    m.d.comb += walk.fill_last.eq(1)
                    m.next = "IDLE"
        return m
