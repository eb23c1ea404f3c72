"""Page-walk cache: fully associative, true LRU, PCID-tagged (docs/reference.md, "Page-walk cache").

An entry caches one non-leaf entry (PML4E, PDPTE or PDE): the virtual-address
prefix it covers, the next table's base and the R/W, U/S and XD combined over
every level down to it.  Everything lives in flip-flops: the lookup compares
every entry in one cycle and picks the deepest match (PDE, then PDPTE, then
PML4E; the lowest slot among equals).

Ports:

- lookup (combinational): ``lk_vaddr``, ``lk_pcid`` give ``hit``, ``hit_level``
  (the level of the cached entry: 4 PML4E, 3 PDPTE, 2 PDE), ``hit_base``
  (next table's base, bits M-1:12) and the combined ``hit_rw``/``hit_us``/
  ``hit_xd``.  ``lk_en`` commits the lookup: a hit becomes most recently used.
- fill (``fill_en``): insert one entry; victim = lowest invalid slot, else LRU.
- flush (``flush_en``): every entry, or only those of ``flush_pcid`` when
  ``flush_match_pcid``.
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.replacement import Replacement, priority_encode
from model.config import Policy

PREFIX_BITS = 27  # vaddr[47:21]: the longest prefix (a PDE's)


def pwc_entry_layout(maxphyaddr: int) -> data.StructLayout:
    return data.StructLayout({
        "level": 3,  # 4 PML4E, 3 PDPTE, 2 PDE
        "pcid": 12,
        "prefix": PREFIX_BITS,  # vaddr[47:21]; a PML4E compares [47:39], a PDPTE [47:30]
        "base": maxphyaddr - 12,  # next table, bits M-1:12
        "rw": 1, "us": 1, "xd": 1,  # combined down to and including this level
    })


def prefix_match(entry_level, entry_prefix, vaddr):
    """Does ``vaddr`` fall under the prefix of an entry at ``entry_level``?"""
    va = vaddr[21:48]
    return Mux(entry_level == 4, entry_prefix[18:] == va[18:],
               Mux(entry_level == 3, entry_prefix[9:] == va[9:], entry_prefix == va))


class PageWalkCache(wiring.Component):
    def __init__(self, entries: int, maxphyaddr: int):
        assert entries >= 1
        self.n = entries
        self.maxphyaddr = maxphyaddr
        self.layout = pwc_entry_layout(maxphyaddr)
        base = maxphyaddr - 12
        super().__init__({
            "lk_en": In(1), "lk_vaddr": In(48), "lk_pcid": In(12),
            "hit": Out(1), "hit_level": Out(3), "hit_base": Out(base),
            "hit_rw": Out(1), "hit_us": Out(1), "hit_xd": Out(1),
            "fill_en": In(1), "fill": In(self.layout),
            "flush_en": In(1), "flush_match_pcid": In(1), "flush_pcid": In(12),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.n
        m.submodules.lru = lru = Replacement(Policy.LRU, 1, n)

        valid = Signal(n, name="pwc_valid")
        slots = [Signal(self.layout, name=f"pwc_slot{i}") for i in range(n)]

        # --- lookup: deepest match wins -------------------------------------------------
        match = {lvl: Signal(n, name=f"pwc_match_l{lvl}") for lvl in (4, 3, 2)}
        for i, e in enumerate(slots):
            hit_i = valid[i] & (e.pcid == self.lk_pcid) & prefix_match(e.level, e.prefix, self.lk_vaddr)
            for lvl in (4, 3, 2):
                m.d.comb += match[lvl][i].eq(hit_i & (e.level == lvl))
        chosen = Signal(n, name="pwc_match_deepest")
        m.d.comb += chosen.eq(Mux(match[2].any(), match[2], Mux(match[3].any(), match[3], match[4])))
        idx = priority_encode(m, chosen, n, "pwc_hit_slot")
        sel = Signal(self.layout, name="pwc_hit_entry")
        m.d.comb += [
            sel.eq(Array(slots)[idx]),
            self.hit.eq(chosen.any()),
            self.hit_level.eq(sel.level), self.hit_base.eq(sel.base),
            self.hit_rw.eq(sel.rw), self.hit_us.eq(sel.us), self.hit_xd.eq(sel.xd),
        ]

        # --- fill: lowest invalid slot, else the LRU slot ------------------------------
        invalid = Signal(n, name="pwc_invalid")
        m.d.comb += invalid.eq(~valid)
        first_invalid = priority_encode(m, invalid, n, "pwc_first_invalid")
        fill_slot = Signal(range(n), name="pwc_fill_slot")
        m.d.comb += fill_slot.eq(Mux(invalid.any(), first_invalid, lru.victim))
        with m.If(self.fill_en):
            m.d.comb += [lru.touch.eq(1), lru.way.eq(fill_slot)]
            for i in range(n):
                with m.If(fill_slot == i):
                    m.d.sync += slots[i].eq(self.fill)
        with m.Elif(self.lk_en & self.hit):
            m.d.comb += [lru.touch.eq(1), lru.way.eq(idx)]

        # --- valid bits: fill sets, flush clears (never both in one cycle) ----------------
        for i, e in enumerate(slots):
            doomed = self.flush_en & (~self.flush_match_pcid | (e.pcid == self.flush_pcid))
            with m.If(self.fill_en & (fill_slot == i)):
                m.d.sync += valid[i].eq(1)
            with m.Elif(doomed):
                m.d.sync += valid[i].eq(0)
        return m
