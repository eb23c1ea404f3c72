"""Quiz: which process does the OOM killer pick (mm/oom_kill.c)?

A random workload (a few processes that malloc and touch memory, some with
shared or file mappings, on a small machine with swap) runs on the kernel
model; the question is the process table the kernel prints before killing
(``dump_tasks()``), and the answer is what ``model.mm.oom_kill.out_of_memory``
then does, with the ``oom_badness()`` terms it recorded for every process.
"""

from __future__ import annotations

import random

from model.mm.kernel import KernelPanic
from model.mm.mm_types import MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES, MM_SWAPENTS
from model.mm.oom_kill import out_of_memory, pgtables_bytes
from model.teach.explain import table
from model.teach.quiz import Knob, Quiz, integer
from model.user.workload import Runner, boot_kernel, parse

DESCRIPTION = "a process table (rss, swapents, pgtables, oom_score_adj): which one does the OOM killer kill"

NAMES = ("postgres", "java", "nginx", "backup", "make", "redis", "chrome", "cron")
ADJ = (0, 0, 0, 0, -1000, -500, -200, 200, 500, 1000)
RAM_MB, SWAP_MB = 32, 32
KNOBS = (Knob("processes", "N", f"how many processes compete (2..{len(NAMES)})", integer("processes", 2, len(NAMES))),)


def workload(rng: random.Random, processes: int | None = None) -> str:
    """The program of the quiz: each process touches its share of more memory than RAM, so some is swapped."""
    drawn = rng.randint(3, 5)
    names = rng.sample(NAMES, processes or drawn)
    total = rng.randint(RAM_MB, RAM_MB + SWAP_MB // 2)  # MiB touched in all: the early ones get swapped out
    cuts = sorted(rng.sample(range(1, total), len(names) - 1))
    shares = [b - a for a, b in zip([0] + cuts, cuts + [total])]
    lines = [f"boot mem={RAM_MB}M swap={SWAP_MB}M"]
    for name, share in zip(names, shares):
        lines += [f"spawn {name} adj={rng.choice(ADJ)}", f"malloc heap {share}M", "touch heap"]
        if rng.random() < 0.3:
            lines += ["mmap shm 1M anon shared", "touch shm"]
        if rng.random() < 0.3:
            lines += [f"file /data/{name}.db 2M", f"mmap db 2M file=/data/{name}.db private prot=r", "load db"]
    return "\n".join(lines) + "\n"


def dump_tasks(tasks) -> str:
    """The table mm/oom_kill.c dump_tasks() prints, with dump_task()'s format string."""
    out = ["Tasks state (memory values in pages):\n",
           "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents "
           "oom_score_adj name\n"]
    for t in tasks:
        mm = t.mm
        out.append(f"[{t.pid:7d}] {0:5d} {t.pid:5d} {mm.total_vm:8d} {mm.rss_pages:8d} {mm.rss[MM_ANONPAGES]:8d} "
                   f"{mm.rss[MM_FILEPAGES]:8d} {mm.rss[MM_SHMEMPAGES]:9d} {pgtables_bytes(mm):8d} "
                   f"{mm.rss[MM_SWAPENTS]:8d}         {t.oom_score_adj:5d} {t.name}\n")
    return "".join(out)


def make(seed: int, *, processes: int | None = None) -> Quiz:
    rng = random.Random(seed)
    text = workload(rng, processes)
    boot, ops = parse(text, f"quiz oom -s {seed}")
    k = boot_kernel(boot, seed=seed)
    runner = Runner(k)
    runner.run(ops)
    tasks = sorted(k.tasks.values(), key=lambda t: t.pid)
    ram, swap = k.managed_pages, k.swap.total_pages
    totalpages = ram + swap
    question = (
        f"A machine with totalram_pages = {ram} and total_swap_pages = {swap} (4 KiB pages) runs these programs:\n"
        + "".join(f"  {line}\n" for line in text.splitlines()[1:])
        + "\nIt runs out of memory, and the kernel prints:\n" + dump_tasks(tasks)
        + "\nWhich process does the OOM killer kill?\n")

    seq = k.decisions.seq
    try:
        victim = out_of_memory(k, tasks[-1])
    except KernelPanic:  # every process at -1000: Linux panics rather than kill one
        victim = None
    decision, = k.decisions.since(seq, "oom")
    rows = []
    for c in decision.detail["candidates"]:
        base = c["rss"] + c["swapents"] + c["pgtables"]
        unkillable = c["points"] is None
        rows.append([str(c["pid"]), c["name"], f"{c['rss']} + {c['swapents']} + {c['pgtables']}", str(base),
                     "-1000: LONG_MIN" if unkillable else f"{c['oom_score_adj']} * {totalpages // 1000} = "
                                                          f"{c['adj_pages']}",
                     "never chosen" if unkillable else str(c["points"])])
    worked = (
        "mm/oom_kill.c oom_badness(): points = get_mm_rss(mm) + get_mm_counter(mm, MM_SWAPENTS)\n"
        "  + mm_pgtables_bytes(mm) / PAGE_SIZE, then adj *= totalpages / 1000 (integer division) and points += adj.\n"
        "oom_score_adj = -1000 (OOM_SCORE_ADJ_MIN) returns LONG_MIN: never chosen.  select_bad_process() keeps the\n"
        "highest points; oom_evaluate_task() skips only a task with fewer points, so a tie goes to the later pid.\n"
        f"totalpages = totalram_pages + total_swap_pages = {ram} + {swap} = {totalpages}; "
        f"totalpages / 1000 = {totalpages // 1000}\n\n"
        + table(["pid", "name", "rss + swapents + pgtables", "= base", "adj * (totalpages/1000)", "points"], rows)
        + "\nThe kernel model then logs:\n" + "".join(f"  {line}\n" for line in k.dmesg[-2:]))
    answer = f"Answer: pid {victim.pid} ({victim.name})" if victim else "Answer: none: every process is unkillable"
    return Quiz(question, worked, answer)
