"""Page-fault handling and page-range operations (Linux mm/memory.c, arch/x86/mm/fault.c).

``handle_mm_fault(kernel, task, vaddr, error_code)`` takes the error code
exactly as the MMU reported it (bits P, W/R, U/S, RSVD, I/D) and resolves the
fault the way Linux does: find the VMA (or grow the stack), check the access
against it (``access_error``), then one of

- demand-zero anonymous memory (a read maps the shared zero page read-only,
  a write allocates a zeroed page: ``do_anonymous_page``),
- file or shmem pages from the page cache (``do_read_fault``, which first maps
  the cached pages of the 64 KiB around the fault (``do_fault_around``),
  ``do_cow_fault`` for a write to a private file mapping, ``do_shared_fault``),
- swap-in from a swap entry left in the PTE (``do_swap_page``),
- copy on write (``do_wp_page``: reuse the page if this is its only mapping,
  else copy it),
- hugetlb pages (model/mm/hugetlb.py).

A bad access delivers SIGSEGV: the task is killed and its memory freed.
"""

from __future__ import annotations

import struct

from model.mm.mm_types import MM_SWAPENTS, VM_EXEC, VM_GROWSDOWN, VM_READ, VM_WRITE
from model.mm.swapfile import pte_to_swp_entry
from model.x86.pte import PAGE_SHIFT, PAGE_SIZE, PF_P, PF_RSVD, PF_WR, PS, RW, D, P

# Pages one fault may allocate: the page, an inode-table buffer and three page-table pages.
FAULT_RESERVE = 5
FAULT_AROUND_PAGES = 16  # fault_around_bytes = 64 KiB
_TABLE = struct.Struct("<512Q")
_AMASK = ((1 << 52) - 1) & ~(PAGE_SIZE - 1)


def pte_pfn(value: int) -> int:
    return (value & _AMASK) >> PAGE_SHIFT


def leaf_entries(mm, start: int, end: int):
    """Every non-zero leaf-level entry for [start, end): (va, value), in address order.

    Present leaves of any size and swap entries in PTEs; empty upper-level
    entries are skipped whole, so a sparse range costs little.
    """
    mem = mm.pt.mem
    out = []

    def visit(table: int, level: int, base: int) -> None:
        shift = 12 + 9 * (level - 1)
        span = 1 << shift
        entries = _TABLE.unpack(mem.read_frame(table >> PAGE_SHIFT))
        first = max(0, (start - base) >> shift) if start > base else 0
        last = min(511, (end - 1 - base) >> shift)
        for i in range(first, last + 1):
            value = entries[i]
            if not value:
                continue
            va = base + i * span
            if level == 1 or (value & P and value & PS):
                out.append((va, value))
            elif value & P:
                visit(value & _AMASK, level - 1, va)

    visit(mm.pt.pml4, 4, 0)
    return out


def copy_stamps_out(task, start: int, end: int) -> None:
    """Forget the touch stamps in [start, end): that memory is gone."""
    for va in [va for va in task.stamps if start <= va < end]:
        del task.stamps[va]


# --- the fault entry point ------------------------------------------------------

def handle_mm_fault(k, task, vaddr: int, error_code: int) -> bool:
    """Resolve one page fault; True means "retry the access", False that the task died."""
    from model.mm.mmap import expand_stack, find_vma
    mm = task.mm
    k.vmstat["pgfault"] += 1
    if error_code & PF_RSVD:
        raise RuntimeError(f"pid {task.pid}: reserved bit set in a page-table entry for {vaddr:#x} "
                           f"(error code {error_code:#x}): the kernel wrote a corrupt entry")
    vaddr &= (1 << 64) - 1
    vma = find_vma(mm, vaddr)
    if vma is not None and vma.start > vaddr:
        if not (vma.flags & VM_GROWSDOWN and expand_stack(k, mm, vma, vaddr)):
            vma = None
    if vma is None:
        return bad_area(k, task, vaddr, error_code, "SEGV_MAPERR")
    if access_error(error_code, vma):
        return bad_area(k, task, vaddr, error_code, "SEGV_ACCERR")
    if not k.ensure_free(FAULT_RESERVE, task):
        if task.alive:
            k.force_sig(task, "SIGKILL", "out of memory in page fault (VM_FAULT_OOM)")
        return False
    write = bool(error_code & PF_WR)
    if vma.is_hugetlb:
        from model.mm.hugetlb import hugetlb_fault
        ok = hugetlb_fault(k, task, vma, vaddr, write)
    else:
        va = vaddr & ~(PAGE_SIZE - 1)
        pte = mm.pt.get_pte(va)
        if pte == 0:
            ok = do_anonymous_page(k, task, vma, va, write) if vma.is_anonymous else \
                do_fault(k, task, vma, va, write)
        elif not pte & P:
            ok = do_swap_page(k, task, vma, va, pte, write)
        elif write and not pte & RW:
            ok = do_wp_page(k, task, vma, va, pte)
        else:
            k.flush_tlb_page(mm, va)  # spurious: the PTE already allows it, the TLB held an old copy
            ok = True
    return ok and task.alive



def access_error(error_code: int, vma) -> bool:
    """arch/x86/mm/fault.c access_error(): may this VMA take this access?"""
    if error_code & PF_WR:
        return not vma.flags & VM_WRITE
    if error_code & PF_P:  # a read or fetch of a present page that the PTE refused
        return True
    return not vma.flags & (VM_READ | VM_EXEC | VM_WRITE)


def bad_area(k, task, vaddr: int, error_code: int, code: str) -> bool:
    k.vmstat["segv"] += 1
    k.force_sig(task, "SIGSEGV", f"segfault at {vaddr:x} error {error_code:x} ({code})")
    return False


def count_fault(k, task, major: bool) -> None:
    if major:
        task.maj_flt += 1
        k.vmstat["pgmajfault"] += 1
    else:
        task.min_flt += 1


# --- anonymous memory ----------------------------------------------------------

def do_anonymous_page(k, task, vma, va: int, write: bool) -> bool:
    mm = task.mm
    count_fault(k, task, False)
    if not write:
        mm.pt.map(va, k.zero_pfn << PAGE_SHIFT, writable=False, user=True, nx=not vma.executable, accessed=True)
        return True
    page = k.alloc_page("anon")
    k.set_pte(mm, va, page, vma, writable=True, dirty=True)
    k.page_add_rmap(page, mm, va)
    return True


def do_wp_page(k, task, vma, va: int, pte: int) -> bool:
    """Write to a present read-only PTE: share it writable, reuse it, or copy it (COW)."""
    mm = task.mm
    count_fault(k, task, False)
    pfn = pte_pfn(pte)
    page = k.pages.get(pfn)
    if vma.shared and page is not None:
        page.dirty = True  # wp_page_shared(): first write to a shared file page since writeback
        mm.pt.protect(va, writable=True, user=True, nx=not vma.executable)
        k.flush_tlb_page(mm, va)
        return True
    if page is not None and page.kind == "anon" and page.mapcount == 1:
        mm.pt.protect(va, writable=True, user=True, nx=not vma.executable)  # wp_page_reuse()
        k.flush_tlb_page(mm, va)
        return True
    new = k.alloc_page("anon", zero=False)  # wp_page_copy()
    k.mem.copy_frame(new.pfn, pfn)
    k.vmstat["cow_fault"] += 1
    mm.pt.unmap(va)
    if page is not None:
        release_page(k, page, mm, va)
    k.set_pte(mm, va, new, vma, writable=True, dirty=True)
    k.page_add_rmap(new, mm, va)
    k.flush_tlb_page(mm, va)
    return True


def do_swap_page(k, task, vma, va: int, pte: int, write: bool) -> bool:
    """Swap-in: read the page back from the slot named by the PTE's swap entry."""
    mm = task.mm
    _, offset = pte_to_swp_entry(pte)
    page = k.alloc_page("anon", zero=False)
    k.mem.write(page.pfn << PAGE_SHIFT, k.swap.read(offset))
    k.swap.put(offset)
    mm.rss[MM_SWAPENTS] -= 1
    k.vmstat["pswpin"] += 1
    k.vmstat["pgpgin"] += PAGE_SIZE >> 10  # swap I/O is block I/O too (submit_bio)
    count_fault(k, task, True)
    k.set_pte(mm, va, page, vma, writable=vma.writable, dirty=write)
    k.page_add_rmap(page, mm, va)
    return True


# --- file and shmem pages ------------------------------------------------------

def do_fault(k, task, vma, va: int, write: bool) -> bool:
    """do_read_fault (fault-around first), do_cow_fault or do_shared_fault."""
    from model.mm.filemap import filemap_fault
    mm = task.mm
    index = vma.file_index(va)
    if vma.file is not None and index >= vma.file.nr_pages:
        k.force_sig(task, "SIGBUS", f"bus error at {va:x}: beyond the end of {vma.file.path}")
        return False
    if not write and do_fault_around(k, task, vma, va):
        count_fault(k, task, False)
        return True
    mapping = vma.mapping if vma.mapping is not None else vma.file.mapping
    page, major = filemap_fault(k, mapping, index, mmap=True)
    count_fault(k, task, major)
    if major and not write and do_fault_around(k, task, vma, va):
        return True  # filemap_fault dropped the lock for the I/O (VM_FAULT_RETRY); the retry faulted around
    if write and not vma.shared:  # do_cow_fault(): a private copy of the file page
        new = k.alloc_page("anon", zero=False)
        k.mem.copy_frame(new.pfn, page.pfn)
        k.set_pte(mm, va, new, vma, writable=True, dirty=True)
        k.page_add_rmap(new, mm, va)
        return True
    if write:
        page.dirty = True  # do_shared_fault(): the page is dirty from its first write
    # Shared shmem is mapped writable at once; a shared file page stays read-only
    # until written, so the write fault can mark it dirty (writenotify).
    writable = vma.shared and vma.writable and (write or mapping.kind == "shmem")
    k.set_pte(mm, va, page, vma, writable=writable, dirty=write)
    k.page_add_rmap(page, mm, va)
    return True


def do_fault_around(k, task, vma, va: int) -> bool:
    """mm/memory.c do_fault_around(): map the cached pages of the fault_around_bytes (64 KiB) aligned
    window around ``va``, clamped to the VMA and to its page table; True if that mapped ``va`` itself."""
    from model.mm.filemap import filemap_map_pages
    pte_off = (va >> PAGE_SHIFT) & 511
    vma_off = (va - vma.start) >> PAGE_SHIFT
    from_pte = max(pte_off & ~(FAULT_AROUND_PAGES - 1), pte_off - min(pte_off, vma_off))
    to_pte = min(from_pte + FAULT_AROUND_PAGES, 512, pte_off + vma.pages - vma_off) - 1
    index = vma.file_index(va)
    return filemap_map_pages(k, task, vma, va, index + from_pte - pte_off, index + to_pte - pte_off)


# --- range operations ------------------------------------------------------------

def release_page(k, page, mm, va: int) -> None:
    """Drop one mapping of a page; an anonymous page with no mapping left is freed."""
    k.page_remove_rmap(page, mm, va)
    if page.mapcount == 0 and page.mapping is None:
        k.free_page(page)


def zap_range(k, mm, vma, start: int, end: int) -> None:
    """zap_pte_range(): clear every entry in [start, end) and release what it held.

    Dirty bits of file pages are harvested (set_page_dirty) so writeback sees them.
    The caller flushes the TLB for the range.
    """
    for va, value in leaf_entries(mm, start, end):
        mm.pt.unmap(va)
        if not value & P:
            k.swap.put(pte_to_swp_entry(value)[1])
            mm.rss[MM_SWAPENTS] -= 1
            continue
        pfn = pte_pfn(value)
        if pfn == k.zero_pfn:
            continue
        page = k.pages[pfn]
        if value & D and page.mapping is not None:
            page.dirty = True
        release_page(k, page, mm, va)


def move_page_tables(k, task, old: int, new: int, length: int) -> None:
    """mremap: every entry of [old, old + length) moves to the same offset from ``new``, pages and swap
    entries alike; the reverse map and the touch stamps follow."""
    mm = task.mm
    for va, value in leaf_entries(mm, old, old + length):
        mm.pt.unmap(va)
        dst = new + (va - old)
        mm.pt.set_pte(dst, value)
        pfn = pte_pfn(value)
        if value & P and pfn != k.zero_pfn:
            page = k.pages[pfn]
            page.rmap[page.rmap.index((mm, va))] = (mm, dst)  # the same mapping, moved
    for va in [va for va in task.stamps if old <= va < old + length]:
        task.stamps[new + (va - old)] = task.stamps.pop(va)


def copy_page_range(k, src_mm, dst_mm, vma) -> None:
    """fork: copy the parent's entries for one VMA (mm/memory.c copy_page_range).

    Private writable mappings become copy-on-write: both PTEs are made
    read-only.  Child entries start old (A clear), and clean for shared
    mappings, as __copy_present_ptes() makes them.
    """
    cow = not vma.shared and vma.writable
    for va, value in leaf_entries(src_mm, vma.start, vma.end):
        if not value & P:
            k.swap.dup(pte_to_swp_entry(value)[1])
            dst_mm.pt.set_pte(va, value)
            dst_mm.rss[MM_SWAPENTS] += 1
            continue
        pfn = pte_pfn(value)
        writable = bool(value & RW)
        if cow and writable:
            src_mm.pt.protect(va, writable=False, user=True, nx=not vma.executable)
            writable = False
        dirty = bool(value & D) and not vma.shared
        dst_mm.pt.map(va, pfn << PAGE_SHIFT, vma.page_size, writable=writable, user=True,
                      nx=not vma.executable, accessed=False, dirty=dirty)
        if pfn != k.zero_pfn:
            k.page_add_rmap(k.pages[pfn], dst_mm, va)


def populate(k, task, vma, start: int, end: int) -> None:
    """MAP_POPULATE: fault every page in now (a write fault for private writable memory)."""
    from model.x86.pte import Access
    access = Access.WRITE if vma.writable and not vma.shared else Access.READ
    for va in range(start, end, vma.page_size.bytes):
        if not task.alive or k.access(task, va, access, stamp=False) is None:
            return
