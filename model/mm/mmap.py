"""Address-space layout and the mapping system calls (Linux mm/mmap.c, mm/mprotect.c, arch/x86/mm/mmap.c).

``mmap`` only creates a VMA: no page is allocated until the first touch
(MAP_POPULATE faults the range in at once).  The top-down allocator places new
mappings below ``mmap_base`` = TASK_SIZE - gap - rnd, where the gap is
RLIMIT_STACK plus the stack guard gap, clamped to [128 MiB, 5/6 of TASK_SIZE]
(arch/x86/mm/mmap.c ``mmap_base()``).
"""

from __future__ import annotations

import bisect

from model.mm.memory import copy_stamps_out, populate, zap_range
from model.mm.mm_types import VM_EXEC, VM_GROWSDOWN, VM_HUGETLB, VM_READ, VM_SHARED, VM_WRITE, VMA
from model.x86.pte import PAGE_SIZE, PageSize

TASK_SIZE = 0x7FFFFFFFF000  # (1 << 47) - PAGE_SIZE: the top of 47-bit user space
STACK_TOP = TASK_SIZE
RLIMIT_STACK = 8 << 20
STACK_GUARD_GAP = 256 * PAGE_SIZE  # mm/mmap.c stack_guard_gap
MMAP_MIN_ADDR = 0x10000  # vm.mmap_min_addr
MMAP_RND_BITS = 28  # x86-64 default of vm.mmap_rnd_bits
STACK_RND_MASK = 0x3FFFFF  # arch/x86/include/asm/elf.h, 64-bit
BRK_RND_RANGE = 0x02000000  # arch_randomize_brk(): up to 32 MiB above the end of bss
INITIAL_STACK = 132 << 10  # setup_arg_pages(): 128 KiB of stack_expand plus the argument pages

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_POPULATE, MAP_HUGETLB = 0x8000, 0x40000
MAP_HUGE_SHIFT = 26
MAP_HUGE_2MB, MAP_HUGE_1GB = 21 << MAP_HUGE_SHIFT, 30 << MAP_HUGE_SHIFT


class SyscallError(Exception):
    """A system call failed with an errno (the program sees -1; this is not a user-input error)."""

    def __init__(self, errno: str, what: str) -> None:
        super().__init__(f"{what}: {errno}")
        self.errno = errno


def page_align(n: int, size: int = PAGE_SIZE) -> int:
    return (n + size - 1) & ~(size - 1)


def mmap_base(rng, aslr: bool) -> int:
    """arch/x86/mm/mmap.c: TASK_SIZE - clamp(RLIMIT_STACK + pad, 128M, 5/6 TASK_SIZE) - rnd."""
    pad = STACK_GUARD_GAP + ((STACK_RND_MASK << 12) if aslr else 0)
    gap = min(max(RLIMIT_STACK + pad, 128 << 20), TASK_SIZE // 6 * 5)
    rnd = (rng.getrandbits(MMAP_RND_BITS) << 12) if aslr else 0
    return page_align(TASK_SIZE - gap - rnd)


def vm_flags(prot: int, shared: bool) -> int:
    flags = (VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0) | \
        (VM_EXEC if prot & PROT_EXEC else 0)
    return flags | (VM_SHARED if shared else 0)


# --- the VMA list ------------------------------------------------------------------

def find_vma(mm, addr: int) -> VMA | None:
    """The first VMA with end > addr (it may start above addr), as Linux find_vma."""
    i = bisect.bisect_right([v.end for v in mm.vmas], addr)
    return mm.vmas[i] if i < len(mm.vmas) else None


def insert_vma(k, mm, vma: VMA) -> None:
    addr = k.caches["vm_area_struct"].alloc()
    if addr is None:
        raise MemoryError("vm_area_struct: slab allocation failed after ensure_free")
    vma.slab_addr = addr
    if vma.mapping is not None:
        vma.mapping.users += 1
    bisect.insort(mm.vmas, vma, key=lambda v: v.start)


def remove_vma(k, mm, vma: VMA) -> None:
    """Unlink a VMA whose pages are already zapped; the last user of a shared object frees it."""
    from model.mm.filemap import truncate_mapping
    mm.vmas.remove(vma)
    k.caches["vm_area_struct"].free(vma.slab_addr)
    if vma.mapping is not None:
        vma.mapping.users -= 1
        if not vma.mapping.users:
            truncate_mapping(k, vma.mapping)


def split_vma(k, mm, vma: VMA, addr: int) -> VMA:
    """Cut ``vma`` at ``addr``; returns the upper part (a new vm_area_struct)."""
    upper = VMA(addr, vma.end, vma.flags, vma.file, vma.pgoff + (addr - vma.start) // PAGE_SIZE, vma.mapping,
                vma.name, vma.page_size, vma.resv_owner, ino=vma.ino)
    vma.end = addr
    insert_vma(k, mm, upper)
    return upper


def vmas_in(k, mm, start: int, end: int) -> list[VMA]:
    """The VMAs covering [start, end), split so that each lies wholly inside it."""
    out = []
    for vma in list(mm.vmas):
        if vma.end <= start or vma.start >= end:
            continue
        if vma.start < start:
            vma = split_vma(k, mm, vma, start)
        if vma.end > end:
            split_vma(k, mm, vma, end)
        out.append(vma)
    return out


def get_unmapped_area(mm, length: int, align: int = PAGE_SIZE) -> int | None:
    """Top-down search below mmap_base for a free, aligned range (vm_unmapped_area)."""
    high = mm.mmap_base
    for vma in reversed(mm.vmas):
        if vma.start >= high:
            continue
        if vma.end <= high - length:
            cand = (high - length) & ~(align - 1)
            if cand >= vma.end:
                return cand
        high = min(high, vma.start)
    cand = (high - length) & ~(align - 1)
    return cand if cand >= MMAP_MIN_ADDR else None


# --- system calls -----------------------------------------------------------------

def do_mmap(k, task, addr: int, length: int, prot: int, flags: int, file=None, offset: int = 0) -> int:
    """mmap(2).  Returns the address; raises SyscallError (EINVAL, ENOMEM) like the kernel."""
    from model.mm.filemap import AddressSpace
    mm = task.mm
    if length <= 0:
        raise SyscallError("EINVAL", "mmap length 0")
    shared = bool(flags & MAP_SHARED)
    if shared == bool(flags & MAP_PRIVATE):
        raise SyscallError("EINVAL", "mmap needs exactly one of MAP_SHARED and MAP_PRIVATE")
    if offset % PAGE_SIZE:
        raise SyscallError("EINVAL", "mmap offset not page aligned")
    page_size = PageSize.SIZE_4K
    if flags & MAP_HUGETLB:
        page_size = PageSize.SIZE_1G if (flags >> MAP_HUGE_SHIFT) & 0x3F == 30 else PageSize.SIZE_2M
    psz = page_size.bytes
    length = page_align(length, psz)
    if flags & MAP_FIXED:
        if addr % psz or addr < MMAP_MIN_ADDR or addr + length > TASK_SIZE:
            raise SyscallError("EINVAL", f"MAP_FIXED address {addr:#x}")
        do_munmap(k, task, addr, length)
    else:
        addr = get_unmapped_area(mm, length, psz)
        if addr is None:
            raise SyscallError("ENOMEM", "no room in the address space")
    vflags = vm_flags(prot, shared)
    mapping = None
    if page_size != PageSize.SIZE_4K:
        vflags |= VM_HUGETLB
        k.hugetlb.reserve(page_size, length // psz)  # raises ENOMEM when the pool is short
        mapping = AddressSpace("hugetlb") if shared else None
    elif file is None:
        # Anonymous memory is accounted: private by accountable_mapping(), shared by shmem_acct_size()
        # when shmem_zero_setup() makes it a tmpfs object; both end in __vm_enough_memory().
        if not vm_enough_memory(k, length // PAGE_SIZE):
            raise SyscallError("ENOMEM", f"mmap of {length} bytes exceeds RAM + swap (heuristic overcommit)")
        if shared:
            mapping = AddressSpace("shmem")
    if not k.ensure_free(2, task):
        raise SyscallError("ENOMEM", "no memory for the vm_area_struct")
    vma = VMA(addr, addr + length, vflags, file, offset // PAGE_SIZE, mapping, page_size=page_size,
              resv_owner=bool(vflags & VM_HUGETLB))
    if file is None and (shared or vma.is_hugetlb):
        k.next_anon_ino += 1
        vma.ino = k.next_anon_ino
    if file is not None:
        from model.mm.filemap import open_file
        open_file(k, file)
    insert_vma(k, mm, vma)
    if flags & MAP_POPULATE:
        populate(k, task, vma, vma.start, vma.end)
    return addr


def vm_enough_memory(k, pages: int) -> bool:
    """OVERCOMMIT_GUESS (mm/util.c): refuse only a request larger than all RAM plus swap."""
    return pages <= k.managed_pages + k.swap.total_pages


def do_munmap(k, task, addr: int, length: int) -> None:
    """munmap(2): zap the pages, free the VMAs and empty page tables, flush the TLB."""
    if addr % PAGE_SIZE or length <= 0:
        raise SyscallError("EINVAL", f"munmap({addr:#x}, {length})")
    mm = task.mm
    end = addr + page_align(length)
    victims = vmas_in(k, mm, addr, end)
    for vma in victims:
        if vma.is_hugetlb and vma.resv_owner:
            k.hugetlb.unreserve_range(mm, vma)
        zap_range(k, mm, vma, vma.start, vma.end)
        remove_vma(k, mm, vma)
    copy_stamps_out(task, addr, end)
    if victims:
        k.flush_tlb_range(mm, addr, end, victims[0].page_size.bytes)
        if mm.pt.free_empty_tables():
            k.flush_tlb_mm(mm)  # freed page-table pages: drop the page-walk cache too


def do_brk(k, task, new_brk: int) -> int:
    """brk(2): move the program break; returns the new break (the old one on failure)."""
    mm = task.mm
    if new_brk < mm.start_brk:
        return mm.brk
    old_end, new_end = page_align(mm.brk), page_align(new_brk)
    if new_end < old_end:
        do_munmap(k, task, new_end, old_end - new_end)
    elif new_end > old_end:
        nxt = find_vma(mm, old_end)
        if nxt is not None and nxt.start < new_end + STACK_GUARD_GAP * bool(nxt.flags & VM_GROWSDOWN):
            return mm.brk
        if not vm_enough_memory(k, (new_end - old_end) // PAGE_SIZE) or not k.ensure_free(2, task):
            return mm.brk
        heap = find_vma(mm, old_end - 1) if old_end > mm.start_brk else None
        if heap is not None and heap.end == old_end and heap.is_anonymous and heap.name == "[heap]":
            heap.end = new_end
        else:
            insert_vma(k, mm, VMA(old_end, new_end, VM_READ | VM_WRITE, name="[heap]"))
    mm.brk = new_brk
    return new_brk


def do_mprotect(k, task, addr: int, length: int, prot: int) -> None:
    """mprotect(2): new VMA flags, then each present PTE rewritten and flushed.

    A write permission is only granted in the PTE where no copy-on-write is
    pending (shared mapping, or an anonymous page mapped once), as
    can_change_pte_writable() decides; other pages take a write fault first.
    """
    from model.mm.memory import leaf_entries
    mm = task.mm
    if addr % PAGE_SIZE or length <= 0:
        raise SyscallError("EINVAL", f"mprotect({addr:#x}, {length})")
    end = addr + page_align(length)
    covered = vmas_in(k, mm, addr, end)
    if sum(v.end - v.start for v in covered) != end - addr:
        raise SyscallError("ENOMEM", f"mprotect range {addr:#x}-{end:#x} is not fully mapped")
    for vma in covered:
        vma.flags = (vma.flags & (VM_SHARED | VM_HUGETLB | VM_GROWSDOWN)) | vm_flags(prot, False)
        for va, value in leaf_entries(mm, vma.start, vma.end):
            if not value & 1:
                continue
            page = k.pages.get((value & 0xFFFFFFFFFF000) >> 12)
            exclusive = page is not None and (vma.shared or (page.kind in ("anon", "hugetlb") and page.mapcount == 1))
            mm.pt.protect(va, writable=vma.writable and exclusive, user=True, nx=not vma.executable)
    k.flush_tlb_range(mm, addr, end)


def expand_stack(k, mm, vma: VMA, addr: int) -> bool:
    """Grow the stack VMA down to ``addr``: refused beyond RLIMIT_STACK or into the guard gap."""
    new_start = addr & ~(PAGE_SIZE - 1)
    if vma.end - new_start > RLIMIT_STACK:
        return False
    i = mm.vmas.index(vma)
    if i > 0 and mm.vmas[i - 1].end + STACK_GUARD_GAP > new_start:
        return False
    vma.start = new_start
    return True


def setup_stack(k, mm, rng, aslr: bool) -> VMA:
    top = STACK_TOP - ((rng.getrandbits(22) & STACK_RND_MASK) << 12 if aslr else 0)
    vma = VMA(top - INITIAL_STACK, top, VM_READ | VM_WRITE | VM_GROWSDOWN, name="[stack]")
    insert_vma(k, mm, vma)
    mm.start_stack = top
    return vma
