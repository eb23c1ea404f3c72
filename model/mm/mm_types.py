"""The kernel model's core objects, after include/linux/mm_types.h and sched.h.

``Page`` is struct page (a folio for huge pages), ``VMA`` is struct
vm_area_struct, ``MM`` is struct mm_struct and ``Task`` is struct task_struct.
They hold state only; the code that changes them lives in the files named after
Linux's (mmap.py, memory.py, vmscan.py, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.x86.pte import PAGE_SIZE, PageSize

# vm_flags bits we use (include/linux/mm.h)
VM_READ, VM_WRITE, VM_EXEC, VM_SHARED = 0x1, 0x2, 0x4, 0x8
VM_GROWSDOWN = 0x100
VM_HUGETLB = 0x400000

# RSS counters (include/linux/mm_types_task.h: MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES)
MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES = "file", "anon", "swap", "shmem"


class Page:
    """One allocated user page (a folio of 2^order frames for huge pages).

    ``kind`` is anon, file (page cache), shmem (shared anonymous, tmpfs-like),
    buffer (block-device metadata, counted as Buffers) or hugetlb.  ``rmap``
    holds every (mm, va) whose PTE maps the page: Linux finds them through
    anon_vma and i_mmap, here they are listed directly.
    """

    __slots__ = ("pfn", "order", "kind", "mapping", "index", "rmap", "dirty", "referenced", "lru")

    def __init__(self, pfn: int, kind: str, order: int = 0, mapping=None, index: int = 0) -> None:
        self.pfn = pfn
        self.order = order
        self.kind = kind
        self.mapping = mapping
        self.index = index
        self.rmap: list[tuple[MM, int]] = []  # a list: 88 host bytes for one mapping, a set takes 216
        self.dirty = False
        self.referenced = False  # PG_referenced: seen by mark_page_accessed, not yet promoted
        self.lru: str | None = None  # name of the LRU list holding the page

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    @property
    def mapcount(self) -> int:
        return len(self.rmap)

    def __repr__(self) -> str:
        return f"Page(pfn={self.pfn:#x}, {self.kind}, order={self.order}, mapcount={self.mapcount})"


@dataclass(eq=False)
class VMA:
    """A virtual memory area [start, end) with one set of permissions and one backing.

    ``file`` is the backing SimFile (file-backed), ``mapping`` the shared
    object for MAP_SHARED anonymous or hugetlb memory; ``pgoff`` is the file
    offset of ``start`` in pages.  ``name`` is what /proc/PID/maps prints in
    the pathname column when there is no file ([heap], [stack]).
    """

    start: int
    end: int
    flags: int
    file: object = None
    pgoff: int = 0
    mapping: object = None
    name: str = ""
    page_size: PageSize = PageSize.SIZE_4K
    resv_owner: bool = False  # hugetlb: this VMA holds pool reservations (HPAGE_RESV_OWNER)
    slab_addr: int = 0  # its vm_area_struct object in the slab allocator
    ino: int = 0  # inode of the shmem or hugetlbfs file behind anonymous shared or huge memory

    @property
    def readable(self) -> bool:
        return bool(self.flags & VM_READ)

    @property
    def writable(self) -> bool:
        return bool(self.flags & VM_WRITE)

    @property
    def executable(self) -> bool:
        return bool(self.flags & VM_EXEC)

    @property
    def shared(self) -> bool:
        return bool(self.flags & VM_SHARED)

    @property
    def is_anonymous(self) -> bool:
        return self.file is None and self.mapping is None

    @property
    def is_hugetlb(self) -> bool:
        return bool(self.flags & VM_HUGETLB)

    @property
    def pages(self) -> int:
        return (self.end - self.start) // PAGE_SIZE

    def file_index(self, va: int) -> int:
        """Page index in the backing object for ``va`` (linear_page_index)."""
        return self.pgoff + (va - self.start) // PAGE_SIZE

    def perms(self) -> str:
        return ("r" if self.readable else "-") + ("w" if self.writable else "-") + \
            ("x" if self.executable else "-") + ("s" if self.shared else "p")


@dataclass(eq=False)
class MM:
    """An address space: page tables, VMAs (sorted by start), brk and the counters."""

    pt: object
    pcid: int
    mmap_base: int
    start_brk: int = 0
    brk: int = 0
    start_stack: int = 0
    vmas: list[VMA] = field(default_factory=list)
    rss: dict[str, int] = field(default_factory=lambda: {MM_FILEPAGES: 0, MM_ANONPAGES: 0, MM_SWAPENTS: 0,
                                                         MM_SHMEMPAGES: 0})
    tlb_flush_pending: bool = False  # a PTE changed while another address space was loaded
    slab_addr: int = 0  # its mm_struct object

    @property
    def total_vm(self) -> int:
        """Mapped pages, as mm->total_vm."""
        return sum(v.pages for v in self.vmas)

    @property
    def rss_pages(self) -> int:
        """get_mm_rss(): file + anon + shmem pages mapped."""
        return self.rss[MM_FILEPAGES] + self.rss[MM_ANONPAGES] + self.rss[MM_SHMEMPAGES]


@dataclass(eq=False)
class Task:
    """A process: pid, name, its address space and the fault counters of /proc/PID/stat."""

    pid: int
    name: str
    mm: MM | None
    oom_score_adj: int = 0
    min_flt: int = 0
    maj_flt: int = 0
    exit_signal: str | None = None  # SIGSEGV, SIGKILL (OOM), SIGBUS, or None for exit()
    exit_reason: str = ""
    vars: dict = field(default_factory=dict)  # workload variables: name -> (addr, size)
    heap: object = None  # the process's malloc arena (model/user/malloc.py)
    stamps: dict[int, int] = field(default_factory=dict)  # page va -> last value stored by touch
    task_slab: int = 0  # its task_struct object
    stack_pfn: int = 0  # its kernel stack (order-2 block)

    @property
    def alive(self) -> bool:
        return self.mm is not None
