"""The golden kernel: boot, page allocation with reclaim, the shootdown hook, and user accesses.

One ``Kernel`` owns physical memory and everything carved from it:

- frames [0, reserved) are the kernel image and firmware areas (never freed),
- the hugetlb pool sits at the top of memory, reserved at boot like the
  ``hugepages=`` / ``hugepagesz=1G`` command line (model/mm/hugetlb.py),
- everything in between belongs to the buddy allocator of one zone; the slab
  allocator, page tables, page cache and anonymous memory all come from it.

The page-fault path never reclaims in the middle of changing a page table:
``ensure_free`` runs first (kswapd, direct reclaim, then the OOM killer) and
guarantees the few pages the fault may need, so every later allocation is a
plain buddy allocation.  Linux gets the same effect by allocating the page
before taking the page-table lock.

Every change to a PTE the MMU may have cached goes through ``flush_tlb_page``
/ ``flush_tlb_range`` / ``flush_tlb_mm``, which end in the one hook
``shootdown(op, value)``: the co-simulation forwards it to the hardware's flush
port and to the reference MMU.

Two records serve the reports: ``decisions`` (a bounded log of what malloc,
reclaim and the OOM killer decided, with the numbers they decided on, so
``--why`` explains this run rather than recomputing it) and ``cputime`` (the
ticks /proc/stat, vmstat and top show).
"""

from __future__ import annotations

import os
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

from model.errors import UserError
from model.mm import hugetlb, vmscan
from model.mm.filemap import Disk
from model.mm.memory import handle_mm_fault
from model.mm.mm_types import MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES, Page, Task
from model.mm.mmap import find_vma
from model.mm.page_alloc import BuddyAllocator
from model.mm.slub import SlabAllocator
from model.mm.swapfile import MAX_SWAP_OFFSET, SwapDevice
from model.reference.ref_walker import ControlRegs, walk
from model.x86.physmem import PhysMem
from model.x86.pte import PAGE_SHIFT, PAGE_SIZE, Access, FaultKind
from model.x86.tlbflush import CR3_NOFLUSH, CtlOp

# Frames the kernel image, the real-mode area and boot data occupy: never in the buddy allocator.
KERNEL_RESERVED_BYTES = 4 << 20
# arch/x86/mm/tlb.c tlb_single_page_flush_ceiling: above this many pages a range flush is a full flush.
TLB_SINGLE_PAGE_FLUSH_CEILING = 33

# Host bytes one hugetlb pool page costs at boot (its slot in the free list and its pfn object).
HUGETLB_BYTES_PER_PAGE = 40

# The first pid the model hands out; every pid from there on is one fork (/proc/stat "processes").
FIRST_PID = 100

_RSS_COUNTER = {"anon": MM_ANONPAGES, "file": MM_FILEPAGES, "buffer": MM_FILEPAGES, "shmem": MM_SHMEMPAGES}


class KernelPanic(Exception):
    """The kernel panicked (``Kernel.panic``): the machine stops; its state is left as it was."""


@dataclass
class Decision:
    """One decision: ``seq`` orders it among all decisions, ``where`` is the workload line that was running."""

    seq: int
    where: str
    kind: str
    outcome: str
    detail: dict


@dataclass
class DecisionLog:
    """The last ``maxlen`` decisions of each kind; never dropped: the totals and the latest decision
    of each (kind, outcome).

    Kinds and their outcomes: ``malloc`` (mmap, brk, heap, mmap-fallback,
    enomem, munmap, free, trim), ``watermark`` (kswapd woken, direct reclaim),
    ``reclaim`` (one LRU page: activate, swap, drop, writeback, rotate,
    deactivate), ``oom`` (kill or none, with every candidate's badness).  The
    workload runner sets ``where`` before each operation.
    """

    maxlen: int = 256
    seq: int = 0
    where: str = ""
    entries: dict = field(default_factory=dict)
    totals: Counter = field(default_factory=Counter)
    latest: dict = field(default_factory=dict)

    def record(self, kind: str, outcome: str, **detail) -> None:
        self.seq += 1
        self.totals[kind, outcome] += 1
        decision = Decision(self.seq, self.where, kind, outcome, detail)
        log = self.entries.get(kind)
        if log is None:
            log = self.entries[kind] = deque(maxlen=self.maxlen)
        log.append(decision)
        self.latest[kind, outcome] = decision

    def since(self, seq: int, kind: str | None = None) -> list[Decision]:
        """Decisions recorded after ``seq`` (those still held), in order."""
        kinds = [kind] if kind else list(self.entries)
        out = [d for name in kinds for d in self.entries.get(name, ()) if d.seq > seq]
        return sorted(out, key=lambda d: d.seq)


class CpuTime:
    """The ticks (USER_HZ = 100 a second) of the model's one CPU, system-wide and per pid.

    The model has no timer interrupt, so it keeps time by work done: the
    workload runner charges one tick to the process of each operation it runs,
    as system time when the operation entered the kernel (a system call or a
    page fault) and as user time otherwise.  The CPU is never idle.  /proc/stat,
    vmstat's cpu columns and its per-second averages, and top's %CPU and TIME+
    all read this clock.
    """

    def __init__(self) -> None:
        self.user = 0
        self.system = 0
        self.by_pid: dict[int, list[int]] = {}  # pid -> [utime, stime]

    def charge(self, pid: int, system: bool) -> None:
        if system:
            self.system += 1
        else:
            self.user += 1
        self.by_pid.setdefault(pid, [0, 0])[system] += 1

    @property
    def jiffies(self) -> int:
        return self.user + self.system


class TrackingAllocator:
    """The buddy allocator as seen by one kind of kernel user (slab or page tables).

    It records the blocks that user holds so /proc/meminfo and the invariant
    checker can tell whose every frame is.
    """

    def __init__(self, buddy: BuddyAllocator) -> None:
        self.buddy = buddy
        self.blocks: dict[int, int] = {}  # pfn -> order

    def alloc_pages(self, order: int = 0) -> int | None:
        pfn = self.buddy.alloc_pages(order)
        if pfn is not None:
            self.blocks[pfn] = order
        return pfn

    def free_pages(self, pfn: int, order: int = 0) -> None:
        self.buddy.free_pages(pfn, order)
        del self.blocks[pfn]

    @property
    def nr_pages(self) -> int:
        return sum(1 << o for o in self.blocks.values())


class SoftwareMMU:
    """The default translator: the reference walker over the process's page tables.

    The co-simulation swaps in an object with the same ``translate`` that asks
    the hardware instead; the fault path only needs the error code it returns.
    """

    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel

    def translate(self, task: Task, vaddr: int, access: Access):
        k = self.kernel
        return walk(k.mem, k.ctrl(task), vaddr, access, True, maxphyaddr=k.maxphyaddr)


class Kernel:
    """Boot a machine of ``mem`` bytes with a ``swap``-byte swap device.

    ``aslr`` turns on address-space randomisation from ``seed``; ``pcide``
    gives each process a PCID; ``hugepages`` and ``hugepages_1g`` reserve the
    hugetlb pools at boot.
    """

    def __init__(self, mem: int = 256 << 20, swap: int = 0, *, seed: int = 0, aslr: bool = False,
                 pcide: bool = False, hugepages: int = 0, hugepages_1g: int = 0, maxphyaddr: int = 40,
                 min_free_kbytes: int | None = None) -> None:
        check_sizes(mem, swap, hugepages + hugepages_1g, maxphyaddr)
        self.mem = PhysMem(mem)
        self.maxphyaddr = maxphyaddr
        self.seed = seed
        self.rng = random.Random(seed)
        self.aslr = aslr
        self.pcide = pcide
        self.reserved_pages = KERNEL_RESERVED_BYTES >> PAGE_SHIFT
        self.hugetlb = hugetlb.HugetlbPool(self.mem.nr_frames, self.reserved_pages, hugepages, hugepages_1g)
        self.buddy = BuddyAllocator(self.reserved_pages, self.hugetlb.start_pfn - self.reserved_pages,
                                    min_free_kbytes)
        self.slab_pages = TrackingAllocator(self.buddy)
        self.pgtable_pages = TrackingAllocator(self.buddy)
        self.stack_pages = TrackingAllocator(self.buddy)  # kernel stacks, THREAD_SIZE = 16 KiB (order 2)
        self.slab = SlabAllocator(self.slab_pages)
        self.caches = {
            "task_struct": self.slab.kmem_cache_create("task_struct", 6528, align=64),
            "mm_struct": self.slab.kmem_cache_create("mm_struct", 1344, align=64),
            "vm_area_struct": self.slab.kmem_cache_create("vm_area_struct", 184, align=8),
            "dentry": self.slab.kmem_cache_create("dentry", 192, align=8, reclaimable=True),
        }
        self.swap = SwapDevice(swap)
        self.disk = Disk()
        self.pages: dict[int, Page] = {}  # first pfn -> Page, every user page in use
        self.lru = vmscan.LRU()
        self.kswapd_active = False
        self.tasks: dict[int, Task] = {}
        self.dead: list[Task] = []
        self.next_pid = FIRST_PID
        self.current: Task | None = None
        self.vmstat: Counter = Counter()
        self.syscalls: Counter = Counter()  # system calls made, by name (the CPU clock's user/system split)
        self.decisions = DecisionLog()
        self.cputime = CpuTime()
        self.dmesg: list[str] = []
        self.flushes: Counter = Counter()
        self.flush_log: deque = deque(maxlen=4096)
        self.flush_listeners: list[Callable[[CtlOp, int], None]] = []
        self.mmu = SoftwareMMU(self)
        self.stamp_seq = 0
        self.next_anon_ino = 1000  # inodes of shmem/hugetlbfs files behind anonymous mappings
        # swapper_pg_dir: the kernel's own top-level table, loaded when no process runs;
        # empty_zero_page: what a read of untouched anonymous memory maps.  Both in the kernel image.
        self.swapper_pml4 = (self.reserved_pages - 1) << PAGE_SHIFT
        self.zero_pfn = self.reserved_pages - 2

    # --- control registers and the shootdown hook -----------------------------

    def ctrl(self, task: Task) -> ControlRegs:
        return ControlRegs(cr3=task.mm.pt.pml4 | task.mm.pcid, wp=True, nxe=True, pcide=self.pcide)

    def shootdown(self, op: CtlOp, value: int) -> None:
        """The one place every CR3 write and TLB flush leaves the kernel."""
        self.flushes[op] += 1
        self.flush_log.append((op, value))
        for listener in self.flush_listeners:
            listener(op, value)

    def switch_to(self, task: Task) -> None:
        """Context switch: load the task's CR3 (keeping its PCID's entries unless a flush is owed)."""
        if self.current is task:
            return
        mm = task.mm
        cr3 = mm.pt.pml4 | mm.pcid
        if self.pcide and not mm.tlb_flush_pending:
            cr3 |= CR3_NOFLUSH
        mm.tlb_flush_pending = False
        self.current = task
        self.shootdown(CtlOp.WRITE_CR3, cr3)

    def switch_to_kernel(self) -> None:
        """Load swapper_pg_dir (the running process exited)."""
        self.current = None
        self.shootdown(CtlOp.WRITE_CR3, self.swapper_pml4)

    def _loaded(self, mm) -> bool:
        return self.current is not None and self.current.mm is mm

    def flush_tlb_page(self, mm, va: int) -> None:
        """After changing one PTE of ``mm`` (flush_tlb_page, INVLPG).

        A non-running address space is flushed when it is next loaded: without
        PCIDs its CR3 write flushes everything, with PCIDs the write omits the
        no-flush bit (Linux: tlb_gen and the need_flush check in switch_mm).
        """
        if self._loaded(mm):
            self.shootdown(CtlOp.FLUSH_VA, va)
        else:
            mm.tlb_flush_pending = True

    def flush_tlb_range(self, mm, start: int, end: int, stride: int = PAGE_SIZE) -> None:
        """flush_tlb_mm_range: per-page INVLPG up to the ceiling, else the whole address space."""
        if (end - start) // stride > TLB_SINGLE_PAGE_FLUSH_CEILING:
            self.flush_tlb_mm(mm)
            return
        for va in range(start, end, stride):
            self.flush_tlb_page(mm, va)

    def flush_tlb_mm(self, mm) -> None:
        if not self._loaded(mm):
            mm.tlb_flush_pending = True
        elif self.pcide:
            self.shootdown(CtlOp.FLUSH_PCID, mm.pcid)
        else:
            self.shootdown(CtlOp.FLUSH_ALL_KEEP_GLOBAL, 0)

    # --- page allocation ---------------------------------------------------------

    def ensure_free(self, nr: int, task: Task) -> bool:
        """Make ``nr`` pages allocatable for ``task`` without going below the min watermark.

        Wakes kswapd below the low watermark (it reclaims one batch per
        allocation until free memory is above high), reclaims directly below
        min, and calls the OOM killer when reclaim makes no progress.  Returns
        False when ``task`` was the OOM victim; with nothing to kill the
        kernel panics.
        """
        wm = self.buddy.watermarks
        if self.buddy.nr_free_pages - nr < wm.low and not self.kswapd_active:
            self.kswapd_active = True
            self.vmstat["kswapd_wake"] += 1
            self.decisions.record("watermark", "kswapd", free=self.buddy.nr_free_pages, nr=nr,
                                  mark=wm.low)
        if self.kswapd_active:
            vmscan.kswapd_batch(self)
        while self.buddy.nr_free_pages - nr < wm.min:
            free = self.buddy.nr_free_pages
            freed = vmscan.direct_reclaim(self, wm.min + nr - free)
            self.decisions.record("watermark", "direct", free=free, nr=nr, mark=wm.min, freed=freed)
            if freed:
                continue
            from model.mm.oom_kill import out_of_memory
            if out_of_memory(self, task) is task:
                return False
        return True

    def panic(self, message: str) -> None:
        """panic(): log it and stop the machine (the workload runner ends the run)."""
        self.dmesg.append(f"Kernel panic - not syncing: {message}")
        raise KernelPanic(message)

    def alloc_page(self, kind: str, *, mapping=None, index: int = 0, zero: bool = True) -> Page:
        """One order-0 user page straight from the buddy allocator (``ensure_free`` came first)."""
        pfn = self.buddy.alloc_pages(0)
        if pfn is None:
            raise MemoryError("buddy allocator empty after ensure_free: the fault reserve is too small")
        if zero:
            self.mem.zero_frame(pfn)
        page = Page(pfn, kind, 0, mapping, index)
        self.pages[pfn] = page
        if kind != "hugetlb":
            vmscan.lru_add(self, page)
        return page

    def free_page(self, page: Page) -> None:
        """Give a page back (its last user is gone)."""
        vmscan.lru_del(self, page)
        del self.pages[page.pfn]
        if page.kind == "hugetlb":
            self.hugetlb.free(self, page)
            return
        self.mem.zero_frame(page.pfn)
        self.buddy.free_pages(page.pfn, 0)

    # --- reverse map and RSS -------------------------------------------------------

    def page_add_rmap(self, page: Page, mm, va: int) -> None:
        page.rmap.append((mm, va))
        counter = _RSS_COUNTER.get(page.kind)
        if counter:
            mm.rss[counter] += 1

    def page_remove_rmap(self, page: Page, mm, va: int) -> None:
        if (mm, va) in page.rmap:
            page.rmap.remove((mm, va))
        counter = _RSS_COUNTER.get(page.kind)
        if counter:
            mm.rss[counter] -= 1

    def set_pte(self, mm, va: int, page: Page, vma, *, writable: bool, dirty: bool) -> None:
        """Install a present leaf like mk_pte(page, vma->vm_page_prot): A set, D set on a write fault."""
        mm.pt.map(va, page.pfn << PAGE_SHIFT, vma.page_size, writable=writable, user=True,
                  nx=not vma.executable, accessed=True, dirty=dirty)

    # --- user accesses -------------------------------------------------------------

    def access(self, task: Task, vaddr: int, access: Access = Access.READ, *, stamp: bool = True) -> int | None:
        """One load, store or fetch by ``task``: translate, fault and retry like the CPU.

        Returns the physical address, or None when the task died on the way
        (SIGSEGV, SIGBUS or the OOM killer).  A store writes a fresh 64-bit
        stamp at the 8-byte word it hits; the invariant checker later finds
        every stamp where the task left it, through COW, swap-out and swap-in.
        """
        if not task.alive:
            raise UserError(f"process {task.pid} ({task.name}) has exited")
        self.switch_to(task)
        for _ in range(4):
            r = self.mmu.translate(task, vaddr, access)
            if r.fault == FaultKind.NONE:
                if access == Access.WRITE and stamp:
                    self.stamp_seq += 1
                    self.mem.write64(r.paddr & ~7, self.stamp_seq)
                    vma = find_vma_for_stamp(task, vaddr)
                    if vma is not None:
                        task.stamps[vaddr & ~7] = self.stamp_seq
                return r.paddr
            if r.fault == FaultKind.NONCANONICAL:
                self.force_sig(task, "SIGSEGV", f"general protection: non-canonical address {vaddr:#x}")
                return None
            if not handle_mm_fault(self, task, vaddr, r.error_code):
                return None
        raise RuntimeError(f"pid {task.pid}: page fault at {vaddr:#x} not resolved after 4 tries")

    def force_sig(self, task: Task, sig: str, reason: str) -> None:
        """Deliver a fatal signal: the task exits and its memory is freed."""
        from model.mm.fork import do_exit
        self.dmesg.append(f"{task.name}[{task.pid}]: {reason}")
        do_exit(self, task, sig, reason)

    # --- lookups -------------------------------------------------------------------

    def alloc_pid(self) -> int:
        pid = self.next_pid
        self.next_pid += 1
        return pid

    def pcid_for(self, pid: int) -> int:
        """PCIDs 1..4095 by pid (0 is the kernel's); the previous holder's entries are flushed at its exit."""
        return pid % 4095 + 1 if self.pcide else 0

    @property
    def total_forks(self) -> int:
        """Processes created since boot (/proc/stat ``processes``): spawn and fork each take a pid."""
        return self.next_pid - FIRST_PID

    @property
    def managed_pages(self) -> int:
        """totalram_pages: every frame but the kernel's reserved ones (hugetlb pool included)."""
        return self.mem.nr_frames - self.reserved_pages


def host_memory() -> int:
    """The host's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_sizes(mem: int, swap: int, huge_pages: int, maxphyaddr: int) -> None:
    """Refuse a machine the model cannot represent or the host cannot hold.

    Boot bookkeeping is otherwise independent of the sizes (the buddy allocator's
    and the swap device's untouched parts are ranges, physical memory is sparse);
    the hugetlb pool lists each of its pages.
    """
    if mem < 16 << 20:
        raise UserError(f"memory size {mem}: the kernel model needs at least 16M")
    if mem > 1 << maxphyaddr:
        raise UserError(f"memory size {mem}: above 2^MAXPHYADDR = {1 << maxphyaddr} bytes, which a "
                        f"{maxphyaddr}-bit physical address cannot reach")
    if swap // PAGE_SIZE - 1 > MAX_SWAP_OFFSET:
        raise UserError(f"swap size {swap}: above the {MAX_SWAP_OFFSET + 1} pages an x86-64 swap entry can name")
    need = huge_pages * HUGETLB_BYTES_PER_PAGE
    if need > host_memory() // 2:
        raise UserError(f"{huge_pages} huge pages: their bookkeeping ({need >> 20} MiB) would not fit in half of "
                        f"this host's {host_memory() >> 20} MiB")


def find_vma_for_stamp(task: Task, vaddr: int):
    """The VMA whose data is private to ``task`` (anonymous or private file), else None."""
    vma = find_vma(task.mm, vaddr)
    if vma is None or vma.start > vaddr or vma.shared:
        return None
    return vma
