"""Page-walk cache: fully associative, true LRU, PCID-tagged (docs/reference.md, "Page-walk cache").

An entry caches one non-leaf entry (PML4E, PDPTE or PDE): the virtual-address
prefix it covers, the next table's base and the R/W, U/S and XD combined over
every level down to it.  It is one :class:`hw.cam.CAM` of ``pwc_entries``
entries in flip-flops, which prefers the deepest match.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux
from amaranth.lib import data, wiring

from hw.cam import CAM
from hw.layouts import (
    PCID_BITS,
    VA_BITS,
    PWCFlushSignature,
    cache_signature,
    pwc_entry_layout,
    pwc_fill_signature,
    pwc_lookup_signature,
)
from model.config import MMUConfig, Policy
from model.x86.pte import Level


def prefix_match(entry, vaddr):
    """Does ``vaddr`` fall under the prefix of ``entry`` (compared on [47:39], [47:30] or [47:21] by level)?"""
    va = vaddr[21:48]
    return Mux(entry.level == Level.PML4, entry.prefix[18:] == va[18:],
               Mux(entry.level == Level.PDPT, entry.prefix[9:] == va[9:], entry.prefix == va))


def deepest(match, entries):
    """Of the matching entries, those of the deepest level that has any (PDE, then PDPTE, then PML4E)."""
    pd, pdpt, pml4 = (Cat(match[i] & (entries[i].level == lvl) for i in range(len(match)))
                      for lvl in (Level.PD, Level.PDPT, Level.PML4))
    return Mux(pd.any(), pd, Mux(pdpt.any(), pdpt, pml4))


class PageWalkCache(wiring.Component):
    """``cfg.pwc_entries`` cached non-leaf entries (the walker looks it up and fills it).

    Ports (hw/layouts.py; ``In``, driven by the walker, except the answers):

    ``lookup`` (:func:`hw.layouts.pwc_lookup_signature`)
        combinational on ``vaddr[47:0]``, ``pcid[11:0]``: ``hit`` and ``entry``
        (level, base[M-13:0] of the next table, combined rw/us/xd): the deepest
        valid entry of that PCID whose prefix covers ``vaddr``, the lowest slot
        among equals.  ``commit`` at the end of the cycle: a hit becomes the most
        recently used.
    ``fill`` (:func:`hw.layouts.pwc_fill_signature`)
        ``en`` inserts ``entry`` at the end of the cycle: the lowest invalid slot,
        else the least recently used one; it becomes the most recently used.
    ``flush`` (:data:`hw.layouts.PWCFlushSignature`)
        ``en`` drops, at the end of the cycle, every entry (``match_pcid`` low)
        or those of ``pcid``.  There are no global PWC entries.
    """

    def __init__(self, cfg: MMUConfig):
        if cfg.pwc_entries < 1:
            raise ValueError("PageWalkCache: pwc_entries must be at least 1 (0 means no page-walk cache at all)")
        self.cfg = cfg
        super().__init__(cache_signature(pwc_lookup_signature(cfg), pwc_fill_signature(cfg), PWCFlushSignature))

    def elaborate(self, platform):
        m = Module()
        m.submodules.cam = cam = CAM(
            entry=pwc_entry_layout(self.cfg), ways=self.cfg.pwc_entries, policy=Policy.LRU,
            key=data.StructLayout({"vaddr": VA_BITS, "pcid": PCID_BITS}),
            match=lambda e, k, i: (e.pcid == k.pcid) & prefix_match(e, k.vaddr),
            prefer=deepest,
            flush_key=data.StructLayout({"match_pcid": 1, "pcid": PCID_BITS}),
            doomed=lambda e, f, s, i: ~f.match_pcid | (e.pcid == f.pcid))
        lookup, fill, flush = self.lookup, self.fill, self.flush
        m.d.comb += [
            cam.lookup.key.vaddr.eq(lookup.vaddr), cam.lookup.key.pcid.eq(lookup.pcid),
            cam.lookup.touch.eq(lookup.commit & cam.lookup.hit),
            lookup.hit.eq(cam.lookup.hit), lookup.entry.eq(cam.lookup.entry),
            cam.fill.en.eq(fill.en), cam.fill.entry.eq(fill.entry),
            cam.flush.en.eq(flush.en), cam.flush.which.match_pcid.eq(flush.match_pcid),
            cam.flush.which.pcid.eq(flush.pcid),
        ]
        return m
