"""Quiz: what does ``free`` say after a few mallocs, touches and frees?

A fresh machine boots, one process starts, and it runs a random sequence of
``malloc`` (below and above glibc's mmap threshold), ``touch`` and ``free``
on the kernel model (model/user/malloc.py follows glibc's ptmalloc2).  The worked
answer follows /proc/meminfo after every operation, with the malloc decision
the model logged for it, then does procps ``free``'s arithmetic
(model/user/procps.py) on the final meminfo.
"""

from __future__ import annotations

import random

from model.proc.show_mem import meminfo, meminfo_fields
from model.teach.explain import table
from model.teach.quiz import Knob, Quiz, integer
from model.user.procps import free_text
from model.user.workload import Runner, boot_kernel, parse

DESCRIPTION = "mallocs, touches and frees above and below the mmap threshold: what `free` reports afterwards"
KNOBS = (Knob("mem", "MIB", "the machine's memory in MiB (16..4096)", integer("mem", 16, 4096)),)

SIZES_K = (16, 48, 100, 120, 136, 200, 256, 512, 1024, 2048, 4096)
DELTAS = ("AnonPages", "PageTables", "Slab")
FINAL = ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SReclaimable", "Active(file)", "Inactive(file)")


def program(rng: random.Random) -> list[str]:
    """A valid sequence: only live variables are touched or freed."""
    ops, live = [], []
    for var in "abcdef"[:rng.randint(3, 6)]:
        if live and rng.random() < 0.4:
            ops.append(f"free {live.pop(rng.randrange(len(live)))}")
        size = rng.choice(SIZES_K)
        ops.append(f"malloc {var} {size}K")
        live.append(var)
        if rng.random() < 0.8:
            part = rng.random() < 0.3 and size >= 64
            ops.append(f"touch {var} 0 {size // 2}K" if part else f"touch {var}")
    if live and rng.random() < 0.5:
        ops.append(f"free {live.pop(rng.randrange(len(live)))}")
    return ops


def _kib(n: int) -> str:
    return f"{n // 1024}K"


def _describe(d) -> str:
    """One malloc decision (model/user/malloc.py logs the numbers it compared) in a few words."""
    x = d.detail
    if d.outcome == "mmap":
        return f"mmap {_kib(x['size'])} (chunk {_kib(x['nb'])} >= threshold {_kib(x['threshold'])})"
    if d.outcome == "brk":
        return f"heap: top too small, brk +{_kib(x['grow'])}"
    if d.outcome == "heap":
        return "heap: a free chunk" if "chunk_size" in x else "heap: carved from the top"
    if d.outcome == "munmap":
        return f"munmap {_kib(x['size'])}; threshold -> {_kib(x['new_threshold'])}"
    if d.outcome == "free":
        return f"back to the heap (top {_kib(x['top'])} < trim {_kib(x['trim_threshold'])})"
    if d.outcome == "trim":
        return f"top {_kib(x['top'])} >= trim {_kib(x['trim_threshold'])}: brk -{_kib(x['trim'])}"
    return d.outcome


def make(seed: int, *, mem: int | None = None) -> Quiz:
    rng = random.Random(seed)
    mem_mb = mem or rng.choice((64, 128, 256))
    ops = program(rng)
    boot, start = parse(f"boot mem={mem_mb}M\nspawn app\n", "quiz free")
    k = boot_kernel(boot, seed=seed)
    runner = Runner(k)
    runner.run(start)
    before_text = meminfo(k)
    before = dict(meminfo_fields(k))

    rows = []
    prev = before

    def after_op(step) -> None:
        nonlocal prev
        now = dict(meminfo_fields(k))
        delta = [f"{now[f] - prev[f]:+d}" if now[f] != prev[f] else "0" for f in DELTAS]
        decided = "; ".join(_describe(d) for d in k.decisions.since(step.first_seq, "malloc"))
        rows.append([step.text, decided] + delta + [str(now["MemFree"])])
        prev = now

    runner.listeners.append(after_op)
    _, body = parse("\n".join(ops) + "\n", "quiz free")
    runner.run(body)

    m = dict(meminfo_fields(k))
    wm = k.buddy.watermarks
    pagecache = (m["Active(file)"] + m["Inactive(file)"]) // 4
    sreclaim = m["SReclaimable"] // 4
    avail_terms = (f"{m['MemFree'] // 4} - {wm.high} + {pagecache} - min({pagecache}/2, {wm.low}) + {sreclaim} - "
                   f"min({sreclaim}/2, {wm.low})")
    used, buffcache = m["MemTotal"] - m["MemAvailable"], m["Buffers"] + m["Cached"] + m["SReclaimable"]
    question = (
        f"A fresh machine with {mem_mb} MiB of RAM and no swap boots, and process app starts.  `free` shows:\n"
        + free_text(before_text)
        + "\napp then runs (glibc malloc: a request of M_MMAP_THRESHOLD, 128 KiB, or more gets its own mmap and\n"
        "free() unmaps it, raising the threshold to its size; smaller ones come from the brk heap, which grows\n"
        "by the request plus a 128 KiB pad and keeps freed memory until its top exceeds M_TRIM_THRESHOLD\n"
        "(128 KiB, then twice the mmap threshold); a page uses memory only once touched):\n"
        + "".join(f"  {op}\n" for op in ops)
        + "\nWhat does `free` report afterwards for used, free and buff/cache (KiB)?\n")
    worked = (
        "/proc/meminfo after each operation (kB; AnonPages, PageTables and Slab as changes):\n"
        + table(["operation", "malloc decided", "AnonPages", "PageTables", "Slab", "MemFree"],
                [["(start)", "", str(before["AnonPages"]), str(before["PageTables"]), str(before["Slab"]),
                  str(before["MemFree"])]] + rows, right=frozenset({2, 3, 4, 5}))
        + "\nFinal /proc/meminfo (kB):\n" + table(list(FINAL), [[str(m[f]) for f in FINAL]], right=frozenset(range(8)))
        + f"MemAvailable (si_mem_available, in pages; watermarks low {wm.low}, high {wm.high}):\n"
        f"  MemFree - high + pagecache - min(pagecache/2, low) + SReclaimable - min(SReclaimable/2, low)\n"
        f"  = {avail_terms} = {m['MemAvailable'] // 4} pages = {m['MemAvailable']} kB\n"
        "procps free: used = MemTotal - MemAvailable, free = MemFree, buff/cache = Buffers + Cached + SReclaimable\n"
        f"  used       = {m['MemTotal']} - {m['MemAvailable']} = {used}\n"
        f"  free       = {m['MemFree']}\n"
        f"  buff/cache = {m['Buffers']} + {m['Cached']} + {m['SReclaimable']} = {buffcache}\n\n"
        + free_text(meminfo(k)))
    answer = f"Answer: used {used} KiB, free {m['MemFree']} KiB, buff/cache {buffcache} KiB"
    return Quiz(question, worked, answer)
