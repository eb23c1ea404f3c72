"""``--why``: the reasons behind the numbers of a run, from the decisions the kernel model logged.

Each topic reads ``k.decisions`` (model/mm/kernel.py: DecisionLog), filled in as
the run happened, and names the Linux or glibc function whose rule it
followed:

- malloc: brk or mmap (glibc malloc/malloc.c ``_int_malloc()``/``sysmalloc()``:
  mmap when nb >= mp_.mmap_threshold, the dynamic threshold in ``free()``),
- available: MemAvailable term by term (``si_mem_available()``) and free's
  used under both procps definitions; this one is the calculation /proc/meminfo
  makes when it is read, so it is shown for the end of the run,
- reclaim: why each page scanned went or stayed (mm/vmscan.c
  ``shrink_folio_list()``, ``folio_check_references()``,
  ``shrink_active_list()``) and what woke reclaim (the watermarks),
- oom: every candidate's ``oom_badness()`` and the victim
  (``select_bad_process()``).
"""

from __future__ import annotations

from itertools import groupby

from model.proc import show_mem
from model.user import procps
from model.user.malloc import DEFAULT_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD_MAX, DEFAULT_TOP_PAD, MINSIZE, SIZE_SZ
from model.x86.pte import PAGE_SHIFT

TOPICS = ("malloc", "available", "reclaim", "oom")


def explain(k, topics=TOPICS) -> str:
    """The chosen topics, each under a ``== why: TOPIC ==`` line."""
    makers = {"malloc": why_malloc, "available": why_available, "reclaim": why_reclaim, "oom": why_oom}
    return "".join(f"== why: {topic} ==\n{makers[topic](k)}" for topic in topics)


def _held_note(k, kind: str) -> str:
    """Say so when the bounded log no longer holds the oldest decisions of a kind."""
    total = sum(n for (name, _), n in k.decisions.totals.items() if name == kind)
    held = len(k.decisions.entries.get(kind, ()))
    return f"  (the log keeps the last {held} of {total} {kind} decisions)\n" if held < total else ""


def _line(where: str) -> str:
    """The workload line without the repeat iteration, so a loop's decisions group together."""
    return where.split(" (i=", 1)[0]


def _malloc_reason(d) -> str:
    x = d.detail
    if d.outcome in ("munmap", "free", "trim"):
        return _free_reason(d)
    head = f"malloc({x['n']}): nb = request2size({x['n']}) = {x['nb']}"
    if d.outcome in ("mmap", "enomem") and x["nb"] >= x["threshold"]:
        tail = (f"mmap({x['size']}) of its own (page_align(nb + SIZE_SZ {SIZE_SZ}))" if d.outcome == "mmap"
                else f"mmap({x['size']}) failed: NULL (ENOMEM)")
        return f"{head} >= mmap_threshold {x['threshold']} -> {tail}"
    head += f" < mmap_threshold {x['threshold']} -> the heap: "
    if d.outcome == "heap" and "chunk_size" in x:
        return head + f"reused a free chunk of {x['chunk_size']} bytes, no system call"
    if d.outcome == "heap":
        return head + f"carved from the top chunk ({x['top']} bytes), no system call"
    if d.outcome == "brk":
        return head + (f"the top chunk ({x['top']} bytes) is smaller than nb + MINSIZE {MINSIZE}, so "
                       f"sysmalloc() grew it with brk(+{x['grow']}) = page_align(nb + M_TOP_PAD "
                       f"{DEFAULT_TOP_PAD} + MINSIZE - top)")
    return head + f"brk was refused, so sysmalloc() fell back to mmap({x['size']})"


def _free_reason(d) -> str:
    x = d.detail
    if d.outcome == "munmap":
        raised = x["new_threshold"] != x["threshold"]
        rule = (f"{x['size']} > mmap_threshold {x['threshold']}: the dynamic threshold is now {x['new_threshold']} "
                f"and trim_threshold {2 * x['new_threshold']}" if raised else
                f"mmap_threshold stays {x['threshold']} (raised only by a larger chunk, up to "
                f"{DEFAULT_MMAP_THRESHOLD_MAX >> 20} MiB)")
        return f"free() of an mmapped chunk of {x['size']} -> munmap at once; {rule}"
    if d.outcome == "trim":
        return (f"free() of a heap chunk of {x['size']}: the top chunk ({x['top']} bytes) reached trim_threshold "
                f"{x['trim_threshold']}, so systrim() lowered the break by {x['trim']}")
    return (f"free() of a heap chunk of {x['size']}: kept for reuse (top chunk {x['top']} bytes < trim_threshold "
            f"{x['trim_threshold']}), no system call")


def _malloc_group(d) -> tuple:
    """Consecutive decisions of one line (a repeat loop), process, outcome and size are shown once."""
    return _line(d.where), d.detail["pid"], d.outcome, d.detail.get("n", d.detail.get("size"))


def why_malloc(k) -> str:
    decisions = list(k.decisions.entries.get("malloc", ()))
    out = [f"glibc malloc/malloc.c: _int_malloc() serves nb = request2size(n) from the heap (a free chunk, else "
           f"the top chunk, grown by sysmalloc() with brk) unless nb >= mp_.mmap_threshold, when sysmalloc() "
           f"mmaps the chunk on its own.  The threshold starts at M_MMAP_THRESHOLD {DEFAULT_MMAP_THRESHOLD} and "
           f"free() of a larger mmapped chunk raises it to that chunk's size (the dynamic threshold).\n"]
    if not decisions:
        return out[0] + "  no malloc or free in this run\n"
    out.append(_held_note(k, "malloc"))
    for (where, pid, _, _), group in groupby(decisions, _malloc_group):
        group = list(group)
        times = f" (x{len(group)})" if len(group) > 1 else ""
        out.append(f"  {where} {group[0].detail['name']}[{pid}]{times}: {_malloc_reason(group[0])}\n")
    return "".join(out)


def why_available(k) -> str:
    m = procps.parse_meminfo(show_mem.meminfo(k))
    t = show_mem.mem_available_terms(k)
    kb = 1 << (PAGE_SHIFT - 10)
    rows = [("MemFree", "", t.free, "NR_FREE_PAGES"),
            ("totalreserve_pages", "-", t.totalreserve, "the high watermark: one zone, no lowmem_reserve"),
            ("page cache", "+", t.pagecache, "Active(file) + Inactive(file)"),
            ("min(page cache / 2, wmark_low)", "-", t.pagecache_kept,
             f"the part assumed still in use; wmark_low = {t.wmark_low}"),
            ("SReclaimable", "+", t.reclaimable, "reclaimable slab (dentries)"),
            ("min(SReclaimable / 2, wmark_low)", "-", t.reclaimable_kept, "")]
    out = [f"MemAvailable: {m['MemAvailable']} kB, as si_mem_available() (mm/show_mem.c; mm/page_alloc.c before "
           f"Linux 6.2) computes it when /proc/meminfo is read: free pages the kernel can hand out without "
           f"swapping, plus the page cache and reclaimable slab it can drop, less what it keeps.\n"]
    out += [f"  {sign:1} {name:<34}{pages:>9} pages  {note}".rstrip() + "\n" for name, sign, pages, note in rows]
    out.append(f"  = {'':<34}{t.available:>9} pages = {t.available * kb} kB"
               + (" (a negative sum reads as 0)" if t.available == 0 else "") + "\n")
    new, old = procps.mem_values(m, "4"), procps.mem_values(m, "3.3", k.buddy.min_free_kbytes)
    cache = m["Cached"] + m["SReclaimable"]
    out.append(f"free's used column:\n"
               f"  procps-ng 4.0.1 and later: MemTotal - MemAvailable = {m['MemTotal']} - {new.available} = "
               f"{new.used} kB\n"
               f"  procps-ng 3.3.x: MemTotal - MemFree - Buffers - (Cached + SReclaimable) = {m['MemTotal']} - "
               f"{m['MemFree']} - {m['Buffers']} - {cache} = {old.used} kB\n"
               f"  the difference is MemFree + Buffers + Cached + SReclaimable - MemAvailable = "
               f"{new.used - old.used:+d} kB: the reserve, the halves of the caches si_mem_available() keeps, and "
               f"cache that cannot be dropped (Shmem); mmu free --procps 3.3 prints the old column\n")
    return "".join(out)


_RECLAIM_OUTCOMES = (
    ("activate", "activated: referenced, so it gets a second chance on the active list"),
    ("swap", "swapped out: anonymous and not referenced"),
    ("drop", "dropped: a clean page-cache page, not referenced"),
    ("writeback", "written back, then dropped: a dirty page-cache page, not referenced"),
    ("rotate", "rotated back: anonymous, not referenced, but no free swap slot"),
)


def _page_reason(d) -> str:
    x = d.detail
    ptes = f"{x['young']} of its {x['mapcount']} PTEs young" if x["mapcount"] else "mapped by no PTE"
    refs = ptes + (", PG_referenced set" if x["pg_referenced"] else ", PG_referenced clear")
    what = {"activate": "activated", "swap": "swapped out", "drop": "dropped", "writeback": "written back, dropped",
            "rotate": "rotated (no swap slot)", "deactivate": "deactivated (A bits cleared)"}[d.outcome]
    return f"pfn {x['pfn']:#x} {x['page']} on {x['lru']} ({x['who']}): {refs} -> {what}"


def why_reclaim(k) -> str:
    wm = k.buddy.watermarks
    totals = k.decisions.totals
    out = [f"mm/vmscan.c: kswapd wakes when an allocation would leave fewer free pages than the low watermark "
           f"and reclaims until free pages are above high; below min the allocating task reclaims itself "
           f"(direct reclaim).  Watermarks: min {wm.min}, low {wm.low}, high {wm.high} pages.\n"]
    wakes = list(k.decisions.entries.get("watermark", ()))
    if not any(kind in ("watermark", "reclaim") for kind, _ in totals):
        return out[0] + "  no reclaim in this run: free memory never fell below the low watermark\n"
    for (where, outcome), group in groupby(wakes, lambda d: (_line(d.where), d.outcome)):
        group = list(group)
        x = group[0].detail
        times = f" (x{len(group)})" if len(group) > 1 else ""
        if outcome == "kswapd":
            out.append(f"  {where}{times}: free {x['free']} - {x['nr']} needed < low {x['mark']}: kswapd woken\n")
        else:
            freed = sum(d.detail["freed"] for d in group)
            out.append(f"  {where}{times}: free {x['free']} - {x['nr']} needed < min {x['mark']}: direct reclaim "
                       f"(try_to_free_pages) freed {freed}\n")
    inactive = sum(totals["reclaim", name] for name, _ in _RECLAIM_OUTCOMES)
    out.append(f"shrink_folio_list() looked at {inactive} pages at the tail of the inactive lists.  "
               f"folio_check_references() reads and clears the accessed (A) bit of every PTE mapping the page "
               f"(the MMU set it on use) and PG_referenced (set by read()): a used page is activated, an unused "
               f"one reclaimed.  (Linux looks twice: a single young PTE without PG_referenced only sets "
               f"PG_referenced and keeps the page inactive for one more round.)\n")
    for name, what in _RECLAIM_OUTCOMES:
        out.append(f"  {totals['reclaim', name]:>8}  {what}\n")
    out.append(f"  {totals['reclaim', 'deactivate']:>8}  aged from an active list to the inactive one by "
               f"shrink_active_list(), A bits cleared: used again before they reach the tail, they are kept\n")
    out.append(_held_note(k, "reclaim"))
    latest = sorted((d for (kind, _), d in k.decisions.latest.items() if kind == "reclaim"), key=lambda d: d.seq)
    if latest:
        out.append("the latest page of each kind of decision:\n")
        out += [f"  {d.where}: {_page_reason(d)}\n" for d in latest]
    return "".join(out)


def why_oom(k) -> str:
    decisions = list(k.decisions.entries.get("oom", ()))
    out = ["mm/oom_kill.c: when reclaim frees nothing, out_of_memory() kills the process select_bad_process() "
           "finds with the highest oom_badness() = rss + swap entries + page-table pages + oom_score_adj * "
           "(totalpages / 1000), in pages; oom_score_adj -1000 is never chosen, and a tie goes to the process "
           "found later.\n"]
    if not decisions:
        return out[0] + "  the OOM killer did not run\n"
    out.append(_held_note(k, "oom"))
    for d in decisions:
        x = d.detail
        out.append(f"  {d.where}: {x['invoker']} invoked the OOM killer; totalpages = RAM {x['ram_pages']} + swap "
                   f"{x['swap_pages']} = {x['totalpages']}\n")
        out.append(f"    {'pid':>5} {'name':<12}{'rss':>8}{'swapents':>10}{'pgtables':>10}{'oom_score_adj':>15}"
                   f"{'adj pages':>11}{'badness':>10}\n")
        for c in x["candidates"]:
            adj = "-" if c["points"] is None else str(c["adj_pages"])
            points = "never" if c["points"] is None else str(c["points"])
            mark = "  <- victim" if c["pid"] == x["victim"] else ""
            out.append(f"    {c['pid']:>5} {c['name']:<12}{c['rss']:>8}{c['swapents']:>10}{c['pgtables']:>10}"
                       f"{c['oom_score_adj']:>15}{adj:>11}{points:>10}{mark}\n")
        if x["victim"] is None:
            out.append("    no process could be killed: the kernel panicked (System is deadlocked on memory)\n")
    return "".join(out)
