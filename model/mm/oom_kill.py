"""The OOM killer (Linux mm/oom_kill.c).

When reclaim cannot free enough memory, ``out_of_memory`` picks the task with
the highest ``oom_badness`` and kills it, logging what Linux 5.x-6.6 logs
(``dump_header``, ``dump_tasks``, ``dump_oom_summary``, ``__oom_kill_process``)::

    NAME invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO), order=0, oom_score_adj=0
    Tasks state (memory values in pages):
    [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
    [    100]     0   100     8250      514    45056        0             0 NAME
    oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=NAME,pid=N,uid=0
    Out of memory: Killed process PID (NAME) total-vm:NkB, anon-rss:NkB, file-rss:NkB, shmem-rss:NkB, UID:0 pgtables:NkB oom_score_adj:N

The invoker is the task whose allocation failed (the faulting process, or
the process being spawned).  The stack dump and ``show_mem`` that Linux logs
between the first two lines are left out.  With no killable task (every one
at oom_score_adj -1000) Linux panics, "System is deadlocked on memory", and so
does the model (``Kernel.panic``).  The victim's memory is freed at once
(Linux: the OOM reaper and the victim's exit).  Each call leaves an ``oom``
decision in ``k.decisions`` with every candidate's badness and its terms.
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


def dump_tasks(k) -> list[str]:
    """dump_tasks(): one row per process with an mm, in pid order, killable or not."""
    rows = ["Tasks state (memory values in pages):",
            "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name"]
    for t in sorted(k.tasks.values(), key=lambda t: t.pid):
        mm = t.mm
        rows.append(f"[{t.pid:7d}] {0:5d} {t.pid:5d} {mm.total_vm:8d} {mm.rss_pages:8d} {pgtables_bytes(mm):8d} "
                    f"{mm.rss[MM_SWAPENTS]:8d}         {t.oom_score_adj:5d} {t.name}")
    return rows


def out_of_memory(k, current):
    """Select and kill a victim for ``current``'s failed allocation; returns the victim.

    With nothing killable the kernel panics (``Kernel.panic`` raises KernelPanic).
    """
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
    k.dmesg.append(f"{current.name} invoked oom-killer: gfp_mask={GFP_USER_FAULT}, order=0, "
                   f"oom_score_adj={current.oom_score_adj}")
    k.dmesg.extend(dump_tasks(k))
    k.decisions.record("oom", "none" if chosen is None else "kill", invoker=current.name, totalpages=totalpages,
                       ram_pages=k.managed_pages, swap_pages=k.swap.total_pages, candidates=candidates,
                       victim=None if chosen is None else chosen.pid)
    if chosen is None:
        k.dmesg.append("Out of memory and no killable processes...")
        k.panic("System is deadlocked on memory")
    mm = chosen.mm
    kb = 4
    k.vmstat["oom_kill"] += 1
    k.dmesg.append(f"oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
                   f"task_memcg=/,task={chosen.name},pid={chosen.pid},uid=0")
    k.dmesg.append(
        f"Out of memory: Killed process {chosen.pid} ({chosen.name}) total-vm:{mm.total_vm * kb}kB, "
        f"anon-rss:{mm.rss[MM_ANONPAGES] * kb}kB, file-rss:{mm.rss[MM_FILEPAGES] * kb}kB, "
        f"shmem-rss:{mm.rss[MM_SHMEMPAGES] * kb}kB, UID:0 pgtables:{pgtables_bytes(mm) >> 10}kB "
        f"oom_score_adj:{chosen.oom_score_adj}")
    do_exit(k, chosen, "SIGKILL", "killed by the OOM killer")
    return chosen
