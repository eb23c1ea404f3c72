"""LRU lists, aging and page reclaim: kswapd and direct reclaim (Linux mm/vmscan.c, mm/swap.c, mm/rmap.c).

Four LRU lists like Linux's: active and inactive, anon (swap-backed: anonymous
and shmem pages) and file (page cache and buffers).  New pages start on the
inactive list; a page found referenced when it reaches the tail of the
inactive list is promoted to the active list; the active list is aged into the
inactive list when it grows larger (``inactive_is_low``).

"Referenced" is read from the accessed bits the MMU sets in the PTEs: aging
clears them (``ptep_test_and_clear_young``) and flushes the TLB entry, so the
next access walks again and sets A.  (x86 Linux skips that flush as an
optimisation, ptep_clear_flush_young() in arch/x86/mm/pgtable.c; this model
follows the project contract that every PTE change is flushed.)

Reclaim takes inactive pages from the tail: clean file pages are dropped,
dirty ones written back first, anonymous pages are written to swap and every
PTE mapping them gets the swap entry (``try_to_unmap``).  Scanning is split
between anon and file by ``vm.swappiness`` (60: anon weight 60, file 140).

Every page scanned leaves a ``reclaim`` decision in ``k.decisions`` (what its
references were and what happened to it), so ``--why`` can show a page's
second chance as it was given.  The model activates a page on any young PTE
or PG_referenced.  Linux's ``folio_check_references()`` looks twice: one
young PTE without PG_referenced only sets PG_referenced and keeps the page on
the inactive list (FOLIOREF_KEEP); it activates on the second reference, on
several young PTEs, or at once for an executable file page.  Its
``shrink_active_list()`` also keeps referenced executable file pages active,
which the model deactivates like any other.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice

from model.mm.mm_types import MM_SWAPENTS
from model.mm.swapfile import swp_entry_to_pte
from model.x86.pte import PAGE_SIZE, D

SWAP_CLUSTER_MAX = 32
SWAPPINESS = 60
MAX_RECLAIM_RETRIES = 16
LISTS = ("inactive_anon", "active_anon", "inactive_file", "active_file")


class LRU:
    """The four lists; each is ordered oldest (tail, scanned first) to newest (head)."""

    def __init__(self) -> None:
        self.lists: dict[str, OrderedDict] = {name: OrderedDict() for name in LISTS}
        self.kswapd_failures = 0

    def size(self, name: str) -> int:
        return len(self.lists[name])


def _is_anon(page) -> bool:
    return page.kind in ("anon", "shmem")


def lru_add(k, page) -> None:
    name = "inactive_anon" if _is_anon(page) else "inactive_file"
    k.lru.lists[name][page.pfn] = page
    page.lru = name


def lru_del(k, page) -> None:
    if page.lru is not None:
        del k.lru.lists[page.lru][page.pfn]
        page.lru = None


def _move(k, page, name: str) -> None:
    lru_del(k, page)
    k.lru.lists[name][page.pfn] = page
    page.lru = name


def activate_page(k, page) -> None:
    _move(k, page, "active_anon" if _is_anon(page) else "active_file")
    k.vmstat["pgactivate"] += 1


def check_references(k, page) -> tuple[int, bool]:
    """Test and clear the accessed bit in every PTE mapping the page (folio_referenced), and PG_referenced.

    Returns (how many PTEs were young, whether PG_referenced was set).
    """
    pg_referenced = page.referenced
    page.referenced = False
    young = 0
    for mm, va in list(page.rmap):
        if mm.pt.test_and_clear_young(va):
            k.flush_tlb_page(mm, va)
            young += 1
    return young, pg_referenced


def page_referenced(k, page) -> bool:
    """Was the page used since the last look: a young PTE or PG_referenced (both are cleared)."""
    young, pg_referenced = check_references(k, page)
    return bool(young) or pg_referenced


def try_to_unmap(k, page, swap_offset: int | None) -> None:
    """Remove every PTE of the page: a swap entry replaces it for anonymous pages."""
    for mm, va in list(page.rmap):
        old = mm.pt.unmap(va)
        if old & D:
            page.dirty = True
        if swap_offset is not None:
            mm.pt.set_pte(va, swp_entry_to_pte(k.swap.type, swap_offset))
            mm.rss[MM_SWAPENTS] += 1
        k.page_remove_rmap(page, mm, va)
        k.flush_tlb_page(mm, va)


def shrink_page(k, page, who: str) -> str | None:
    """Reclaim one unreferenced inactive page: returns how (swap, drop, writeback), or None if it
    must stay (an anonymous page with no free swap slot)."""
    from model.mm.filemap import writeback_page
    if _is_anon(page):
        offset = k.swap.alloc_slot()
        if offset is None:
            return None
        # The swap entry's holders: each PTE of an anonymous page, or for shmem the one entry that
        # replaces the page in its mapping (shmem_writepage: the PTEs are just unmapped).
        users = 1 if page.kind == "shmem" else len(page.rmap)
        k.swap.write(offset, k.mem.read_frame(page.pfn), users)
        if page.kind == "shmem":
            del page.mapping.pages[page.index]
            page.mapping.swapped[page.index] = offset
            try_to_unmap(k, page, None)
        else:
            try_to_unmap(k, page, offset)
        k.vmstat["pswpout"] += 1
        k.vmstat["pgpgout"] += PAGE_SIZE >> 10  # swap I/O is block I/O too (submit_bio)
        how = "swap"
    else:
        try_to_unmap(k, page, None)
        how = "writeback" if page.dirty else "drop"
        if page.dirty:
            writeback_page(k, page)
        del page.mapping.pages[page.index]
    k.vmstat[f"pgsteal_{who}"] += 1
    k.free_page(page)
    return how


def shrink_inactive_list(k, name: str, nr: int, who: str) -> int:
    """shrink_folio_list() on the tail of an inactive list: a referenced page gets its second chance
    (activated), an unreferenced one is reclaimed."""
    lst = k.lru.lists[name]
    freed = 0
    for page in list(islice(lst.values(), nr)):
        k.vmstat[f"pgscan_{who}"] += 1
        mapcount = page.mapcount
        young, pg_referenced = check_references(k, page)
        if young or pg_referenced:
            activate_page(k, page)
            outcome = "activate"
        else:
            outcome = shrink_page(k, page, who)
            if outcome is None:
                _move(k, page, name)  # rotate: no swap slot for it now
                outcome = "rotate"
            else:
                freed += 1
        k.decisions.record("reclaim", outcome, pfn=page.pfn, page=page.kind, lru=name, who=who, young=young,
                           mapcount=mapcount, pg_referenced=pg_referenced)
    return freed


def shrink_active_list(k, name: str, nr: int) -> None:
    """Age the tail of an active list into the inactive list, clearing accessed bits on the way."""
    lst = k.lru.lists[name]
    inactive = "inactive_" + name.split("_")[1]
    for page in list(islice(lst.values(), nr)):
        mapcount = page.mapcount
        young, pg_referenced = check_references(k, page)
        _move(k, page, inactive)
        k.vmstat["pgdeactivate"] += 1
        k.decisions.record("reclaim", "deactivate", pfn=page.pfn, page=page.kind, lru=name, who="aging",
                           young=young, mapcount=mapcount, pg_referenced=pg_referenced)


def shrink_lruvec(k, who: str, nr_to_scan: int = SWAP_CLUSTER_MAX) -> int:
    """One reclaim pass: balance active/inactive, then scan both types by swappiness."""
    lru = k.lru
    for kind in ("anon", "file"):
        if kind == "anon" and not k.swap.free_pages:
            continue
        active, inactive = lru.size("active_" + kind), lru.size("inactive_" + kind)
        if inactive < active or inactive == 0:  # inactive_is_low() with inactive_ratio 1
            shrink_active_list(k, "active_" + kind, min(nr_to_scan, active))
    can_swap = k.swap.free_pages > 0 and (lru.size("inactive_anon") or lru.size("active_anon"))
    has_file = lru.size("inactive_file") or lru.size("active_file")
    if can_swap and has_file:
        nr_anon = max(1, nr_to_scan * SWAPPINESS // 200)
        nr_file = nr_to_scan - nr_anon
    elif can_swap:
        nr_anon, nr_file = nr_to_scan, 0
    else:
        nr_anon, nr_file = 0, nr_to_scan
    freed = shrink_inactive_list(k, "inactive_file", nr_file, who) if nr_file else 0
    if nr_anon:
        freed += shrink_inactive_list(k, "inactive_anon", nr_anon, who)
    return freed + shrink_slab(k)


def shrink_slab(k) -> int:
    """Drop dentries of files with nothing cached (prune_dcache), then empty slabs of the reclaimable caches."""
    for f in k.disk.files.values():
        if getattr(f, "dentry_addr", 0) and not f.mapping.pages:
            k.caches["dentry"].free(f.dentry_addr)
            f.dentry_addr = 0
    before = k.buddy.nr_free_pages
    k.caches["dentry"].shrink()
    return k.buddy.nr_free_pages - before


def kswapd_batch(k) -> None:
    """kswapd, run for one batch: reclaim until free memory is above the high watermark.

    It gives up after MAX_RECLAIM_RETRIES batches without progress, as
    pgdat->kswapd_failures does, until it is woken again.
    """
    if k.buddy.nr_free_pages >= k.buddy.watermarks.high:
        k.kswapd_active = False
        k.lru.kswapd_failures = 0
        return
    if shrink_lruvec(k, "kswapd"):
        k.lru.kswapd_failures = 0
        return
    k.lru.kswapd_failures += 1
    if k.lru.kswapd_failures >= MAX_RECLAIM_RETRIES:
        k.kswapd_active = False
        k.lru.kswapd_failures = 0


def direct_reclaim(k, nr_pages: int) -> int:
    """try_to_free_pages(): the allocating task reclaims; returns the pages freed (0: no progress)."""
    k.vmstat["allocstall"] += 1
    total = sum(k.lru.size(n) for n in LISTS)
    freed = 0
    for _ in range(2 + total // SWAP_CLUSTER_MAX * 2):  # priorities down to 0 scan everything twice
        scanned = k.vmstat["pgscan_direct"] + k.vmstat["pgdeactivate"]
        freed += shrink_lruvec(k, "direct")
        if freed >= nr_pages or scanned == k.vmstat["pgscan_direct"] + k.vmstat["pgdeactivate"]:
            break
    return freed

