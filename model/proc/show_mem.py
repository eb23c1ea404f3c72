"""/proc/meminfo, /proc/vmstat, /proc/stat and /proc/buddyinfo of the kernel model
(fs/proc/meminfo.c, mm/vmstat.c, fs/proc/stat.c).

Each meminfo line is written as ``show_val_kb()`` does: the name padded to 16
columns, the value in kB right-aligned in 8, then `` kB``.  MemAvailable is
``si_mem_available()`` (mm/show_mem.c; mm/page_alloc.c before 6.2)::

    available = MemFree - totalreserve_pages
    pagecache = Active(file) + Inactive(file);  available += pagecache - min(pagecache / 2, wmark_low)
    reclaimable = SReclaimable;                  available += reclaimable - min(reclaimable / 2, wmark_low)

with ``totalreserve_pages`` = the high watermark of our single zone (it has no
lowmem_reserve; calculate_totalreserve_pages()) and ``wmark_low`` its low
watermark.  Cached is NR_FILE_PAGES - swap cache - Buffers, so it includes
Shmem, as in Linux.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.mm.mm_types import VM_SHARED, VM_WRITE
from model.x86.pte import PAGE_SHIFT, PageSize
from model.x86.tlbflush import CtlOp

VMALLOC_TOTAL_KB = 34359738367  # x86-64 4-level: VMALLOC_SIZE_TB 32 -> 32 TiB - 1 kB, as every x86-64 box shows


def page_counts(k) -> dict[str, int]:
    """The node counters meminfo is built from, in pages."""
    counts = {"anon": 0, "file": 0, "shmem": 0, "buffer": 0, "hugetlb": 0, "dirty": 0, "mapped": 0}
    for page in k.pages.values():
        counts[page.kind] += 1
        if page.kind in ("file", "buffer"):
            counts["dirty"] += page.dirty
        if page.kind in ("file", "shmem") and page.rmap:
            counts["mapped"] += 1
    return counts


@dataclass(frozen=True)
class MemAvailableTerms:
    """The inputs of si_mem_available(), in pages, as it reads them when /proc/meminfo is generated."""

    free: int  # NR_FREE_PAGES
    totalreserve: int  # totalreserve_pages: the high watermark (one zone, no lowmem_reserve)
    wmark_low: int
    pagecache: int  # Active(file) + Inactive(file)
    reclaimable: int  # SReclaimable (the model has no NR_KERNEL_MISC_RECLAIMABLE)

    @property
    def pagecache_kept(self) -> int:
        """The part of the page cache assumed needed: min(pagecache / 2, wmark_low)."""
        return min(self.pagecache // 2, self.wmark_low)

    @property
    def reclaimable_kept(self) -> int:
        return min(self.reclaimable // 2, self.wmark_low)

    @property
    def available(self) -> int:
        """MemAvailable in pages (negative sums read as 0, as the kernel clamps them)."""
        total = self.free - self.totalreserve + self.pagecache - self.pagecache_kept + \
            self.reclaimable - self.reclaimable_kept
        return max(total, 0)


def mem_available_terms(k) -> MemAvailableTerms:
    wm = k.buddy.watermarks
    return MemAvailableTerms(free=k.buddy.nr_free_pages, totalreserve=wm.high, wmark_low=wm.low,
                             pagecache=k.lru.size("active_file") + k.lru.size("inactive_file"),
                             reclaimable=k.slab.reclaimable_bytes >> PAGE_SHIFT)


def si_mem_available(k) -> int:
    """MemAvailable in pages (see the module docstring for the formula and its source)."""
    return mem_available_terms(k).available


def committed_as(k) -> int:
    """Committed_AS in pages: private writable and shared anonymous mappings (VM_ACCOUNT)."""
    total = 0
    for task in k.tasks.values():
        for vma in task.mm.vmas:
            if vma.is_hugetlb:
                continue
            if (vma.flags & (VM_WRITE | VM_SHARED)) == VM_WRITE or (vma.shared and vma.file is None):
                total += vma.pages
    return total


def meminfo_fields(k) -> list[tuple[str, int]]:
    """(name, kB) in the order fs/proc/meminfo.c prints them; HugePages_* are counts, not kB."""
    kb = 1 << (PAGE_SHIFT - 10)
    c = page_counts(k)
    lru = {name: k.lru.size(name) for name in ("active_anon", "inactive_anon", "active_file", "inactive_file")}
    sreclaimable = k.slab.reclaimable_bytes >> 10
    sunreclaim = k.slab.unreclaimable_bytes >> 10
    pool = k.hugetlb
    h2m, h1g = PageSize.SIZE_2M, PageSize.SIZE_1G
    hugetlb_kb = (pool.total[h2m] << 11) + (pool.total[h1g] << 20)
    managed = k.managed_pages
    commit_limit = (managed - (hugetlb_kb >> 2)) * 50 // 100 + k.swap.total_pages  # overcommit_ratio 50
    return [
        ("MemTotal", managed * kb),
        ("MemFree", k.buddy.nr_free_pages * kb),
        ("MemAvailable", si_mem_available(k) * kb),
        ("Buffers", c["buffer"] * kb),
        ("Cached", (c["file"] + c["shmem"]) * kb),
        ("SwapCached", 0),
        ("Active", (lru["active_anon"] + lru["active_file"]) * kb),
        ("Inactive", (lru["inactive_anon"] + lru["inactive_file"]) * kb),
        ("Active(anon)", lru["active_anon"] * kb),
        ("Inactive(anon)", lru["inactive_anon"] * kb),
        ("Active(file)", lru["active_file"] * kb),
        ("Inactive(file)", lru["inactive_file"] * kb),
        ("Unevictable", 0),
        ("Mlocked", 0),
        ("SwapTotal", k.swap.total_pages * kb),
        ("SwapFree", k.swap.free_pages * kb),
        ("Dirty", c["dirty"] * kb),
        ("Writeback", 0),
        ("AnonPages", c["anon"] * kb),
        ("Mapped", c["mapped"] * kb),
        ("Shmem", c["shmem"] * kb),
        ("KReclaimable", sreclaimable),
        ("Slab", sreclaimable + sunreclaim),
        ("SReclaimable", sreclaimable),
        ("SUnreclaim", sunreclaim),
        ("KernelStack", k.stack_pages.nr_pages * kb),
        ("PageTables", k.pgtable_pages.nr_pages * kb),
        ("SecPageTables", 0),
        ("NFS_Unstable", 0),
        ("Bounce", 0),
        ("WritebackTmp", 0),
        ("CommitLimit", commit_limit * kb),
        ("Committed_AS", committed_as(k) * kb),
        ("VmallocTotal", VMALLOC_TOTAL_KB),
        ("VmallocUsed", 0),
        ("VmallocChunk", 0),
        ("HardwareCorrupted", 0),
        ("AnonHugePages", 0),
        ("ShmemHugePages", 0),
        ("ShmemPmdMapped", 0),
        ("FileHugePages", 0),
        ("FilePmdMapped", 0),
        ("HugePages_Total", pool.total[h2m]),
        ("HugePages_Free", pool.nr_free(h2m)),
        ("HugePages_Rsvd", pool.resv[h2m]),
        ("HugePages_Surp", 0),
        ("Hugepagesize", 2048),
        ("Hugetlb", hugetlb_kb),
    ]


def meminfo(k) -> str:
    """/proc/meminfo text, byte for byte in the kernel's format."""
    lines = []
    for name, value in meminfo_fields(k):
        if name.startswith("HugePages_"):
            lines.append(f"{name + ':':<19}{value:5d}\n")  # hugetlb_report_meminfo(): "HugePages_Total:   %5lu"
        elif name == "HardwareCorrupted":
            lines.append(f"HardwareCorrupted: {value:5d} kB\n")  # its own seq_printf in meminfo.c
        else:
            lines.append(f"{name + ':':<16}{value:8d} kB\n")
    return "".join(lines)


# /proc/vmstat: the counters we keep, in mm/vmstat.c vmstat_text order.
VMSTAT_EVENTS = ("pgpgin", "pgpgout", "pswpin", "pswpout", "allocstall", "pgactivate", "pgdeactivate",
                 "pgfault", "pgmajfault", "pgsteal_kswapd", "pgsteal_direct", "pgscan_kswapd", "pgscan_direct",
                 "oom_kill")


def vmstat(k) -> str:
    """/proc/vmstat lines ("name value"): node counters then event counters."""
    c = page_counts(k)
    state = [
        ("nr_free_pages", k.buddy.nr_free_pages),
        ("nr_inactive_anon", k.lru.size("inactive_anon")),
        ("nr_active_anon", k.lru.size("active_anon")),
        ("nr_inactive_file", k.lru.size("inactive_file")),
        ("nr_active_file", k.lru.size("active_file")),
        ("nr_slab_reclaimable", k.slab.reclaimable_bytes >> PAGE_SHIFT),
        ("nr_slab_unreclaimable", k.slab.unreclaimable_bytes >> PAGE_SHIFT),
        ("nr_anon_pages", c["anon"]),
        ("nr_mapped", c["mapped"]),
        ("nr_file_pages", c["file"] + c["shmem"] + c["buffer"]),
        ("nr_dirty", c["dirty"]),
        ("nr_shmem", c["shmem"]),
        ("nr_written", k.vmstat["nr_written"]),
        ("nr_kernel_stack", k.stack_pages.nr_pages << 2),
        ("nr_page_table_pages", k.pgtable_pages.nr_pages),
        ("nr_swapcached", 0),
    ]
    events = [("allocstall_normal" if e == "allocstall" else e, k.vmstat[e]) for e in VMSTAT_EVENTS]
    return "".join(f"{name} {value}\n" for name, value in state + events)


def proc_stat(k) -> str:
    """/proc/stat (fs/proc/stat.c show_stat()) of the model's one CPU.

    The cpu lines are user nice system idle iowait irq softirq steal guest
    guest_nice in USER_HZ ticks from ``k.cputime``; ``intr`` counts the timer
    interrupt of each tick (HZ = USER_HZ here; no device interrupts); ``ctxt``
    every CR3 load of a context switch; ``btime`` is 0 (the model has no wall
    clock); ``processes`` the forks since boot; ``procs_running`` is 1 while
    a live process is on the CPU.
    """
    t = k.cputime
    cpu = f"{t.user} 0 {t.system} 0 0 0 0 0 0 0"
    running = int(k.current is not None and k.current.alive)
    return (f"cpu  {cpu}\ncpu0 {cpu}\nintr {t.jiffies}\nctxt {k.flushes[CtlOp.WRITE_CR3]}\nbtime 0\n"
            f"processes {k.total_forks}\nprocs_running {running}\nprocs_blocked 0\n"
            f"softirq 0 0 0 0 0 0 0 0 0 0 0\n")


def buddyinfo(k) -> str:
    return k.buddy.buddyinfo()
