"""The hugetlb pool and huge-page faults (Linux mm/hugetlb.c).

The pool is reserved at boot, as the ``hugepages=N`` and ``hugepagesz=1G
hugepages=M`` kernel command line do: 1 GiB pages need 262144 contiguous,
1 GiB-aligned frames, far beyond the buddy allocator's largest block (order
10, 4 MiB), so only a boot-time carve-out can provide them (Linux allocates
gigantic pages from memblock at boot for the same reason).  The pool sits at
the top of physical memory: 1 GiB pages highest (aligned), 2 MiB pages below.

``mmap(MAP_HUGETLB)`` reserves pages from the pool at once and fails with
ENOMEM when it is short (hugetlb_reserve_pages); pages are taken at first
touch.  Hugetlb pages are on no LRU, are never swapped, and count in no RSS.
"""

from __future__ import annotations

from model.errors import UserError
from model.mm.mm_types import Page
from model.x86.pte import PAGE_SHIFT, PageSize

_PFNS = {PageSize.SIZE_2M: 512, PageSize.SIZE_1G: 1 << 18}
MIN_BUDDY_PAGES = (8 << 20) >> PAGE_SHIFT


class HugetlbPool:
    """Free huge pages per size, plus reservations made by mmap and not yet faulted in."""

    def __init__(self, nr_frames: int, reserved_pages: int, nr_2m: int, nr_1g: int) -> None:
        if nr_2m < 0 or nr_1g < 0:
            raise UserError("hugepages: the number of huge pages must be >= 0")
        top = nr_frames
        start_1g = (top & ~(_PFNS[PageSize.SIZE_1G] - 1)) - nr_1g * _PFNS[PageSize.SIZE_1G] if nr_1g else top
        start_2m = (start_1g & ~(_PFNS[PageSize.SIZE_2M] - 1)) - nr_2m * _PFNS[PageSize.SIZE_2M] if nr_2m \
            else start_1g
        if start_2m - reserved_pages < MIN_BUDDY_PAGES:
            raise UserError(f"hugepages={nr_2m} hugepages_1g={nr_1g}: the pool does not fit in "
                            f"{(nr_frames << PAGE_SHIFT) >> 20} MiB of memory and leave 8 MiB to the buddy "
                            f"allocator (1 GiB pages need 1 GiB-aligned memory)")
        self.start_pfn = start_2m
        self.free_pages = {
            PageSize.SIZE_2M: [start_2m + i * 512 for i in range(nr_2m)][::-1],
            PageSize.SIZE_1G: [start_1g + i * _PFNS[PageSize.SIZE_1G] for i in range(nr_1g)][::-1],
        }
        self.total = {PageSize.SIZE_2M: nr_2m, PageSize.SIZE_1G: nr_1g}
        self.resv = {PageSize.SIZE_2M: 0, PageSize.SIZE_1G: 0}

    def nr_free(self, size: PageSize) -> int:
        return len(self.free_pages[size])

    def reserve(self, size: PageSize, n: int) -> None:
        from model.mm.mmap import SyscallError
        if self.nr_free(size) - self.resv[size] < n:
            raise SyscallError("ENOMEM", f"hugetlb pool ({size.label}): {n} pages asked, "
                                         f"{self.nr_free(size) - self.resv[size]} unreserved")
        self.resv[size] += n

    def unreserve_range(self, mm, vma) -> None:
        """munmap/exit of the reserving VMA: give back what was never faulted in."""
        from model.mm.memory import leaf_entries
        size = vma.page_size
        total = (vma.end - vma.start) // size.bytes
        if vma.mapping is not None:
            used = sum(1 for i in range(total) if vma.pgoff // _PFNS[size] + i in vma.mapping.pages)
        else:
            used = len(leaf_entries(mm, vma.start, vma.end))
        self.resv[size] -= max(total - used, 0)

    def alloc(self, k, size: PageSize, mapping, index: int) -> Page | None:
        if not self.free_pages[size]:
            return None
        pfn = self.free_pages[size].pop()
        for i in range(_PFNS[size]):
            k.mem.zero_frame(pfn + i)
        page = Page(pfn, "hugetlb", order=size.shift - PAGE_SHIFT, mapping=mapping, index=index)
        k.pages[pfn] = page
        return page

    def free(self, k, page: Page) -> None:
        size = PageSize.SIZE_2M if page.order == 9 else PageSize.SIZE_1G
        for i in range(page.nr_pages):
            k.mem.zero_frame(page.pfn + i)
        self.free_pages[size].append(page.pfn)


def hugetlb_fault(k, task, vma, vaddr: int, write: bool) -> bool:
    """hugetlb_no_page() / hugetlb_wp(): a huge page from the pool, shared or copied on write."""
    from model.mm.memory import count_fault, release_page
    mm = task.mm
    size = vma.page_size
    base = vaddr & ~(size.bytes - 1)
    index = vma.pgoff // _PFNS[size] + (base - vma.start) // size.bytes
    pool = k.hugetlb
    leaf = mm.pt.lookup(base)
    count_fault(k, task, False)
    if leaf is None:
        page = vma.mapping.pages.get(index) if vma.mapping is not None else None
        if page is None:
            page = pool.alloc(k, size, vma.mapping, index)
            if page is None:
                k.force_sig(task, "SIGBUS", f"bus error at {vaddr:x}: hugetlb pool ({size.label}) empty")
                return False
            if vma.resv_owner and pool.resv[size]:
                pool.resv[size] -= 1
            if vma.mapping is not None:
                vma.mapping.pages[index] = page
        k.set_pte(mm, base, page, vma, writable=vma.writable, dirty=write)
        k.page_add_rmap(page, mm, base)
        return True
    page = k.pages[leaf.pa >> PAGE_SHIFT]
    if write and not leaf.writable:
        if vma.shared or page.mapcount == 1:
            mm.pt.protect(base, writable=True, user=True, nx=not vma.executable)
        else:
            new = pool.alloc(k, size, None, index)
            if new is None:
                k.force_sig(task, "SIGBUS", f"bus error at {vaddr:x}: no huge page for copy-on-write")
                return False
            for i in range(page.nr_pages):
                k.mem.copy_frame(new.pfn + i, page.pfn + i)
            release_page(k, page, mm, base)
            k.set_pte(mm, base, new, vma, writable=True, dirty=True)
            k.page_add_rmap(new, mm, base)
    k.flush_tlb_page(mm, base)
    return True
