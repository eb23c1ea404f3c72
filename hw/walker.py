"""The hardware page walker: docs/reference.md "The walk", rule by rule, plus the page-walk cache.

State machine (one walk at a time; ``start`` is accepted only in IDLE)::

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
  which takes the entry and checks it.
- At each level, in this order: P = 0 faults (error code P=0); a reserved bit
  (M..51, XD with NXE = 0, PS in a PML4E, 20:13 in a 2 MiB leaf, 29:13 in a
  1 GiB leaf) faults with P=1, RSVD=1; PS in a PDPTE/PDE or level PT is the leaf.
- At the leaf the combined permissions are checked (:func:`access_allowed`).
- A faulting walk writes nothing and fills nothing.

The results stay on the ``res_*`` outputs from DONE until the next ``start``.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.layouts import FlagsLayout, MemRespLayout, mem_req_layout
from hw.pwc import PageWalkCache
from model.config import MMUConfig

ACCESS_READ, ACCESS_WRITE, ACCESS_FETCH = 0, 1, 2
BIT_P, BIT_RW, BIT_US, BIT_A, BIT_D, BIT_PS, BIT_G, BIT_XD = 0, 1, 2, 5, 6, 7, 8, 63


def access_allowed(rw, us, nx, access, user, flags):
    """Step 4 of the walk on combined rights (``rw``: R/W at every level, ``us``: U/S at every
    level, ``nx``: XD at any level).  Used by the walker at the leaf and by the TLB on a match."""
    is_write = access == ACCESS_WRITE
    is_fetch = access == ACCESS_FETCH
    fetch_ok = ~(flags.nxe & nx) & Mux(user, us, ~(flags.smep & us))
    data_ok = Mux(user, us & (rw | ~is_write), ~(flags.smap & us) & (rw | ~is_write | ~flags.wp))
    return Mux(is_fetch, fetch_ok, data_ok)


def error_code(access, user, flags, *, present, rsvd):
    """Page-fault error code (SDM 4.7): P, W/R, U/S, RSVD, I/D = fetch and (NXE or SMEP)."""
    is_fetch = access == ACCESS_FETCH
    return Cat(present | rsvd, access == ACCESS_WRITE, user, rsvd, is_fetch & (flags.nxe | flags.smep))


class Walker(wiring.Component):
    def __init__(self, cfg: MMUConfig):
        self.cfg = cfg
        m_ = cfg.maxphyaddr
        super().__init__({
            # start a walk (IDLE only)
            "start": In(1),
            "start_vaddr": In(48),
            "start_access": In(2),
            "start_user": In(1),
            "start_pml4": In(m_ - 12),  # CR3[M-1:12]
            "start_pcid": In(12),
            "flags": In(FlagsLayout),
            # memory
            "mem_req": Out(stream.Signature(mem_req_layout(cfg))),
            "mem_resp": In(stream.Signature(MemRespLayout)),
            # result (valid in DONE, held until the next start)
            "done": Out(1),
            "res_fault": Out(1),  # page fault (a walk never sees a non-canonical address)
            "res_error_code": Out(5),
            "res_paddr": Out(m_),
            "res_size": Out(2),  # 0 4K, 1 2M, 2 1G
            "res_frame": Out(m_ - 12),  # page base, bits M-1:12 (low bits cleared for 2M/1G)
            "res_rw": Out(1), "res_us": Out(1), "res_nx": Out(1),
            "res_dirty": Out(1), "res_global": Out(1),
            # after DONE: commit (fill the PWC) or release
            "commit": In(1),
            "release": In(1),
            "fill_last": Out(1),  # the last cycle of FILL_PWC (the walker is idle next cycle)
            "idle": Out(1),
            "walking": Out(1),  # READ, WAIT or AD
            "pwc_hit": Out(1),  # pulse: this walk starts below PML4
            # page-walk-cache flush (from the control port)
            "pwc_flush_en": In(1),
            "pwc_flush_match_pcid": In(1),
            "pwc_flush_pcid": In(12),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        M = cfg.maxphyaddr
        flags = self.flags

        # --- the walk's registers --------------------------------------------------------
        vaddr = Signal(48, name="walk_vaddr")
        access = Signal(2, name="walk_access")
        user = Signal(name="walk_user")
        pcid = Signal(12, name="walk_pcid")
        level = Signal(3, name="walk_level")  # 4 PML4 .. 1 PT: the level being read
        table = Signal(M - 12, name="walk_table")  # base of the table being read
        rw = Signal(name="walk_rw")  # combined over the levels so far
        us = Signal(name="walk_us")
        nx = Signal(name="walk_nx")
        # per level (index = level - 1): entry read, its address, the combined rights down to it
        ent = [Signal(64, name=f"walk_entry_l{lv}") for lv in (1, 2, 3, 4)]
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
        m.d.comb += [
            self.res_fault.eq(res_fault), self.res_error_code.eq(res_ec), self.res_paddr.eq(res_paddr),
            self.res_size.eq(res_size), self.res_frame.eq(res_frame), self.res_rw.eq(rw),
            self.res_us.eq(us), self.res_nx.eq(nx), self.res_dirty.eq(res_dirty),
            self.res_global.eq(res_global),
        ]

        # --- page-walk cache ---------------------------------------------------------------
        if cfg.pwc_entries:
            m.submodules.pwc = pwc = PageWalkCache(cfg.pwc_entries, M)
            m.d.comb += [
                pwc.lk_vaddr.eq(self.start_vaddr), pwc.lk_pcid.eq(self.start_pcid),
                pwc.flush_en.eq(self.pwc_flush_en), pwc.flush_match_pcid.eq(self.pwc_flush_match_pcid),
                pwc.flush_pcid.eq(self.pwc_flush_pcid),
            ]
            pwc_hit, pwc_level, pwc_base = pwc.hit, pwc.hit_level, pwc.hit_base
            pwc_rw, pwc_us, pwc_xd = pwc.hit_rw, pwc.hit_us, pwc.hit_xd
        else:
            pwc = None
            pwc_hit, pwc_level, pwc_base = Const(0), Const(4, 3), Const(0, M - 12)
            pwc_rw, pwc_us, pwc_xd = Const(1), Const(1), Const(0)

        # --- the entry being read, decoded -------------------------------------------------
        index = Signal(9, name="walk_index")
        m.d.comb += index.eq(Array(vaddr[12 + 9 * i: 21 + 9 * i] for i in range(4))[level - 1])
        read_addr = Signal(M, name="walk_read_addr")
        m.d.comb += read_addr.eq(Cat(Const(0, 3), index, table))

        value = Signal(64, name="walk_value")
        m.d.comb += value.eq(self.mem_resp.payload.rdata)
        present = value[BIT_P]
        is_leaf = Signal(name="walk_is_leaf")
        m.d.comb += is_leaf.eq((level == 1) | ((level != 4) & value[BIT_PS]))
        rsvd = Signal(name="walk_rsvd")
        rsvd_terms = [~flags.nxe & value[BIT_XD], (level == 4) & value[BIT_PS],
                      is_leaf & (level == 2) & value[13:21].any(),
                      is_leaf & (level == 3) & value[13:30].any()]
        if M < 52:
            rsvd_terms.append(value[M:52].any())
        m.d.comb += rsvd.eq(Cat(*rsvd_terms).any())
        new_rw = Signal(name="walk_new_rw")
        new_us = Signal(name="walk_new_us")
        new_nx = Signal(name="walk_new_nx")
        m.d.comb += [new_rw.eq(rw & value[BIT_RW]), new_us.eq(us & value[BIT_US]), new_nx.eq(nx | value[BIT_XD])]
        allowed = Signal(name="walk_allowed")
        m.d.comb += allowed.eq(access_allowed(new_rw, new_us, new_nx, access, user, flags))
        is_write = access == ACCESS_WRITE

        # A/D writes due at the leaf: every entry read from DRAM (read_mask) lacking A, the leaf
        # lacking D on a write.  ent[] of the levels above hold what was read.
        read_mask = Signal(4, name="walk_read_mask")  # bit level-1: read from DRAM in this walk
        ad_due = Signal(4, name="walk_ad_due")
        for i in range(4):
            lv = i + 1
            above = read_mask[i] & ~ent[i][BIT_A]
            here = (level == lv) & (~value[BIT_A] | (is_write & ~value[BIT_D]))
            m.d.comb += ad_due[i].eq(Mux(level == lv, here, Mux(level < lv, above, 0)))

        # frame of the leaf, with the page-offset bits cleared
        frame = Signal(M - 12, name="walk_leaf_frame")
        m.d.comb += frame.eq(Mux(level == 3, Cat(Const(0, 18), value[30:M]),
                                 Mux(level == 2, Cat(Const(0, 9), value[21:M]), value[12:M])))
        offset = Signal(30, name="walk_offset")
        m.d.comb += offset.eq(Mux(level == 3, vaddr[:30], Mux(level == 2, vaddr[:21], vaddr[:12])))

        # --- memory request ----------------------------------------------------------------
        ad_level = Signal(3, name="walk_ad_level")  # highest pending A/D write
        m.d.comb += ad_level.eq(Mux(ad_pending[3], 4, Mux(ad_pending[2], 3, Mux(ad_pending[1], 2, 1))))
        ad_old = Signal(64, name="walk_ad_old")
        m.d.comb += ad_old.eq(Array(ent)[ad_level - 1])
        ad_new = Signal(64, name="walk_ad_new")
        m.d.comb += ad_new.eq(ad_old | (1 << BIT_A) | Mux(is_write & (ad_level == leaf_level), 1 << BIT_D, 0))

        fill_level = Signal(3, name="walk_pwc_fill_level")
        m.d.comb += fill_level.eq(Mux(pwc_pending[3], 4, Mux(pwc_pending[2], 3, 2)))

        with m.FSM(name="walker"):
            with m.State("IDLE"):
                m.d.comb += self.idle.eq(1)
                with m.If(self.start):
                    # The page-walk cache is looked up in the start cycle (the TLB lookup's cycle), so a
                    # control operation accepted in that cycle takes effect after this walk's lookup.
                    if pwc is not None:
                        m.d.comb += pwc.lk_en.eq(1)
                    m.d.sync += [
                        vaddr.eq(self.start_vaddr), access.eq(self.start_access), user.eq(self.start_user),
                        pcid.eq(self.start_pcid),
                        read_mask.eq(0), ad_pending.eq(0), pwc_pending.eq(0),
                    ]
                    with m.If(pwc_hit):
                        m.d.comb += self.pwc_hit.eq(1)
                        m.d.sync += [level.eq(pwc_level - 1), table.eq(pwc_base),
                                     rw.eq(pwc_rw), us.eq(pwc_us), nx.eq(pwc_xd)]
                    with m.Else():
                        m.d.sync += [level.eq(4), table.eq(self.start_pml4), rw.eq(1), us.eq(1), nx.eq(0)]
                    m.next = "READ"

            with m.State("READ"):
                m.d.comb += [
                    self.walking.eq(1),
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
                m.d.comb += [self.walking.eq(1), self.mem_resp.ready.eq(1)]
                with m.If(self.mem_resp.valid):
                    for i in range(4):
                        with m.If(level == i + 1):
                            m.d.sync += [ent[i].eq(value), read_mask[i].eq(1),
                                         lvl_rw[i].eq(new_rw), lvl_us[i].eq(new_us), lvl_xd[i].eq(new_nx)]
                    m.d.sync += [rw.eq(new_rw), us.eq(new_us), nx.eq(new_nx)]
                    with m.If(~present):
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
                                res_size.eq(level - 1),
                                res_dirty.eq(value[BIT_D] | is_write), res_global.eq(value[BIT_G]),
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
                        m.d.sync += [table.eq(value[12:M]), level.eq(level - 1)]
                        m.next = "READ"

            with m.State("AD"):
                m.d.comb += [
                    self.walking.eq(1),
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
                m.d.comb += self.done.eq(1)
                with m.If(self.commit):
                    m.next = "FILL_PWC"
                with m.Elif(self.release):
                    m.next = "IDLE"

            with m.State("FILL_PWC"):
                # one insert per cycle, top-down: PML4E, PDPTE, PDE (those read from DRAM)
                rest = Signal(4, name="walk_pwc_rest")
                m.d.comb += rest.eq(Cat(*(pwc_pending[i] & (fill_level != i + 1) for i in range(4))))
                if pwc is not None:
                    with m.If(pwc_pending.any()):
                        i_rw, i_us, i_xd = Array(lvl_rw), Array(lvl_us), Array(lvl_xd)
                        m.d.comb += [
                            pwc.fill_en.eq(1),
                            pwc.fill.level.eq(fill_level),
                            pwc.fill.pcid.eq(pcid),
                            pwc.fill.prefix.eq(vaddr[21:48]),
                            pwc.fill.base.eq(Array(e[12:M] for e in ent)[fill_level - 1]),
                            pwc.fill.rw.eq(i_rw[fill_level - 1]),
                            pwc.fill.us.eq(i_us[fill_level - 1]),
                            pwc.fill.xd.eq(i_xd[fill_level - 1]),
                        ]
                    m.d.sync += pwc_pending.eq(rest)
                    with m.If(~rest.any()):
                        m.d.comb += self.fill_last.eq(1)
                        m.next = "IDLE"
                else:
                    m.d.comb += self.fill_last.eq(1)
                    m.next = "IDLE"
        return m
