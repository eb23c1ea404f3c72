"""The OOM killer (Linux mm/oom_kill.c).

When reclaim cannot free enough memory, ``out_of_memory`` picks the task with
the highest ``oom_badness`` and kills it, logging the kernel's own lines::

    NAME invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO), order=0, oom_score_adj=0
    Out of memory: Killed process PID (NAME) total-vm:NkB, anon-rss:NkB, file-rss:NkB, shmem-rss:NkB, UID:0 pgtables:NkB oom_score_adj:N

(the format string of ``__oom_kill_process()``).  The victim's memory is freed
at once (Linux: the OOM reaper and the victim's exit).  Each call leaves an
``oom`` decision in ``k.decisions`` with every candidate's badness and its
terms (rss, swap entries, page tables, oom_score_adj: what Linux's
``dump_tasks()`` lists in the kernel log).
"""

from __future__ import annotations

from model.mm.mm_types import MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES, MM_SWAPENTS
from model.x86.pte import PAGE_SHIFT

OOM_SCORE_ADJ_MIN = -1000
GFP_USER_FAULT = "0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO)"


def pgtables_bytes(mm) -> int:
    """mm_pgtables_bytes(): PDPT, PD and PT pages (the PGD/PML4 is not counted)."""
    return (mm.pt.table_pages - 1) << PAGE_SHIFT


def badness_terms(task, totalpages: int) -> dict:
    """The terms of oom_badness() for one task, in pages: rss, swapents, pgtables, and
    adj_pages = oom_score_adj * (totalpages / 1000), integer division first as in Linux."""
    mm = task.mm
    return {"pid": task.pid, "name": task.name, "rss": mm.rss_pages, "swapents": mm.rss[MM_SWAPENTS],
            "pgtables": pgtables_bytes(mm) >> PAGE_SHIFT, "oom_score_adj": task.oom_score_adj,
            "adj_pages": task.oom_score_adj * (totalpages // 1000)}


def oom_badness(task, totalpages: int) -> int | None:
    """RSS + swap entries + page-table pages, plus oom_score_adj in thousandths of memory.

    None for an unkillable task (oom_score_adj -1000).
    """
    if task.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return None
    t = badness_terms(task, totalpages)
    return t["rss"] + t["swapents"] + t["pgtables"] + t["adj_pages"]


def out_of_memory(k, current):
    """Select and kill a victim; returns it, or None when no task can be killed."""
    from model.mm.fork import do_exit
    totalpages = k.managed_pages + k.swap.total_pages
    chosen, chosen_points = None, None
    candidates = []
    for task in sorted(k.tasks.values(), key=lambda t: t.pid):  # for_each_process: creation order
        points = oom_badness(task, totalpages)
        candidates.append(dict(badness_terms(task, totalpages), points=points))
        if points is None or (chosen_points is not None and points < chosen_points):
            continue
        chosen, chosen_points = task, points
    invoker = current.name if current is not None and current.alive else "kswapd0"
    adj = current.oom_score_adj if current is not None and current.alive else 0
    k.dmesg.append(f"{invoker} invoked oom-killer: gfp_mask={GFP_USER_FAULT}, order=0, oom_score_adj={adj}")
    k.decisions.record("oom", "none" if chosen is None else "kill", invoker=invoker, totalpages=totalpages,
                       ram_pages=k.managed_pages, swap_pages=k.swap.total_pages, candidates=candidates,
                       victim=None if chosen is None else chosen.pid)
    if chosen is None:
        k.dmesg.append("Out of memory and no killable processes...")
        return None
    mm = chosen.mm
    kb = 4
    k.vmstat["oom_kill"] += 1
    k.dmesg.append(
        f"Out of memory: Killed process {chosen.pid} ({chosen.name}) total-vm:{mm.total_vm * kb}kB, "
        f"anon-rss:{mm.rss[MM_ANONPAGES] * kb}kB, file-rss:{mm.rss[MM_FILEPAGES] * kb}kB, "
        f"shmem-rss:{mm.rss[MM_SHMEMPAGES] * kb}kB, UID:0 pgtables:{pgtables_bytes(mm) >> 10}kB "
        f"oom_score_adj:{chosen.oom_score_adj}")
    do_exit(k, chosen, "SIGKILL", "killed by the OOM killer")
    return chosen
