"""Linux memory-management facts the golden kernel must reproduce (processes, faults, COW, swap, OOM)."""

from __future__ import annotations

import pytest

from model.mm import fork, mmap
from model.mm.invariants import check
from model.mm.kernel import Kernel
from model.mm.mm_types import MM_ANONPAGES, MM_SWAPENTS
from model.mm.swapfile import pte_to_swp_entry, swp_entry_to_pte
from model.user.malloc import Malloc
from model.x86.pte import PS, RW, A, Access, D, P, PageSize
from model.x86.tlbflush import CR3_NOFLUSH, CtlOp


def boot(**kw):
    k = Kernel(kw.pop("mem", 64 << 20), kw.pop("swap", 0), **kw)
    task = fork.spawn(k, "app")
    task.heap = Malloc(k, task)
    return k, task


def anon_rss(task) -> int:
    return task.mm.rss[MM_ANONPAGES]


def test_malloc_64k_grows_brk_and_faults_only_the_pages_glibc_writes():
    """A first malloc(64K) on glibc 2.36 (measured, tests/test_oracle_linux.py): brk(+132K) for the tcache
    chunk and the request, and 2 pages faulted by glibc's own writes (the zeroed tcache and the chunk header
    on the first page, the new top's header 64 KiB further); the rest only when touched."""
    k, t = boot()
    brk0, rss0 = t.mm.brk, anon_rss(t)
    p = t.heap.malloc(64 << 10)
    assert t.mm.brk == brk0 + (132 << 10) and brk0 <= p < t.mm.brk
    assert anon_rss(t) == rss0 + 2
    t.heap.touch(p, 64 << 10)
    assert anon_rss(t) == rss0 + 17  # 64 KiB from p+16: 17 pages once the chunk straddles a page
    check(k)


def test_malloc_128k_uses_mmap_m_mmap_threshold():
    k, t = boot()
    brk0 = t.mm.brk
    below = t.heap.malloc((128 << 10) - 64)
    p = t.heap.malloc(128 << 10)
    vma = mmap.find_vma(t.mm, p)
    assert t.heap.chunks[below][2] is False and t.heap.chunks[p][2] is True
    assert vma.start == p - 16 and vma.name == "" and t.mm.brk > brk0
    assert vma.start < t.mm.mmap_base
    rss, free = anon_rss(t), k.buddy.nr_free_pages
    big = mmap.do_mmap(k, t, 0, 48 << 20, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    assert anon_rss(t) == rss and k.buddy.nr_free_pages >= free - 1  # nothing until first touch
    assert t.mm.pt.lookup(big) is None


def test_map_populate_faults_the_whole_range_in_at_mmap_time():
    k, t = boot()
    rss = anon_rss(t)
    mmap.do_mmap(k, t, 0, 32 << 12, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    assert anon_rss(t) == rss + 32


def test_shared_anonymous_memory_is_shmem_shared_across_fork():
    from model.proc.show_mem import meminfo
    from model.user.procps import parse_meminfo
    k, t = boot()
    p = mmap.do_mmap(k, t, 0, 16 << 12, 3, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    k.access(t, p, Access.WRITE)
    child = fork.do_fork(k, t, "child")
    assert child.mm.pt.lookup(p) is None  # vma_needs_copy(): a shared mapping's entries are not copied
    assert k.access(child, p, Access.READ) == t.mm.pt.lookup(p).pa and child.mm.pt.lookup(p).writable
    k.access(child, p + 4096, Access.WRITE)
    assert t.mm.pt.lookup(p + 4096) is None and k.access(t, p + 4096, Access.READ) == child.mm.pt.lookup(p + 4096).pa
    m = parse_meminfo(meminfo(k))
    assert m["Shmem"] == 8 and m["Cached"] >= 8
    check(k)


def test_free_of_mmapped_chunk_unmaps_at_once_and_raises_dynamic_threshold():
    k, t = boot()
    p = t.heap.malloc(1 << 20)
    t.heap.touch(p, 1 << 20)
    rss = anon_rss(t)
    t.heap.free(p)
    assert mmap.find_vma(t.mm, p) is None or mmap.find_vma(t.mm, p).start > p
    assert anon_rss(t) == rss - 257
    assert t.heap.mmap_threshold == (1 << 20) + 4096 and t.heap.trim_threshold == 2 * t.heap.mmap_threshold
    q = t.heap.malloc(512 << 10)  # now below the raised threshold: from the heap
    assert t.heap.chunks[q][2] is False
    check(k)


def test_free_trims_heap_top_past_m_trim_threshold():
    k, t = boot()
    ptrs = [t.heap.malloc(100 << 10) for _ in range(4)]
    high = t.mm.brk
    for p in reversed(ptrs):
        t.heap.free(p)
    assert t.mm.brk < high
    assert t.heap.top_size < (128 << 10) + 4096 + 32 + 4096


def test_read_of_untouched_anonymous_memory_maps_the_zero_page():
    k, t = boot()
    p = mmap.do_mmap(k, t, 0, 64 << 10, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    rss0 = anon_rss(t)
    pa = k.access(t, p, Access.READ)
    assert pa >> 12 == k.zero_pfn and anon_rss(t) == rss0
    k.access(t, p, Access.WRITE)  # write fault on the zero page: a private zeroed copy
    assert anon_rss(t) == rss0 + 1 and k.mem.read64(t.mm.pt.lookup(p).pa + 8) == 0
    check(k)


def test_fork_shares_pages_read_only_and_the_first_write_copies_cow():
    k, parent = boot()
    p = parent.heap.malloc(256 << 10)
    parent.heap.touch(p, 256 << 10)
    child = fork.do_fork(k, parent, "child")
    leaf_p, leaf_c = parent.mm.pt.lookup(p), child.mm.pt.lookup(p)
    assert leaf_p.pa == leaf_c.pa and not leaf_p.writable and not leaf_c.writable
    assert k.pages[leaf_p.pa >> 12].mapcount == 2
    assert not leaf_c.accessed  # __copy_present_ptes: the child's entries start old
    k.access(child, p, Access.WRITE)
    assert child.mm.pt.lookup(p).pa != leaf_p.pa and child.mm.pt.lookup(p).writable
    k.access(parent, p, Access.WRITE)  # now the only mapping: reused, not copied
    assert parent.mm.pt.lookup(p).pa == leaf_p.pa and k.vmstat["cow_fault"] == 1
    check(k)


def test_stack_grows_down_to_rlimit_stack_then_sigsegv():
    k, t = boot()
    top = t.mm.start_stack
    assert top == mmap.TASK_SIZE == 0x7FFFFFFFF000
    assert k.access(t, top - (8 << 20) + 8, Access.WRITE) is not None  # 8 MiB: the limit exactly
    stack = mmap.find_vma(t.mm, top - 1)
    assert stack.start == top - (8 << 20)
    assert k.access(t, top - (8 << 20) - 8, Access.WRITE) is None
    assert t.exit_signal == "SIGSEGV" and not t.alive and t in k.dead  # recorded, memory freed
    assert "(SEGV_MAPERR)" in k.dmesg[-1]


def test_mmap_base_is_task_size_minus_the_128m_gap_without_aslr_and_seeded_with_it():
    k, t = boot()
    assert t.mm.mmap_base == 0x7FFFF7FFF000  # TASK_SIZE - 128 MiB (RLIMIT_STACK + guard gap < 128 MiB)
    bases = [boot(aslr=True, seed=7)[1].mm.mmap_base for _ in range(2)]
    assert bases[0] == bases[1] != 0x7FFFF7FFF000
    assert boot(aslr=True, seed=8)[1].mm.mmap_base != bases[0]


def test_proc_pid_maps_columns_follow_show_map_vma():
    from model.proc.task_mmu import show_maps
    k, t = boot()
    t.heap.touch(t.heap.malloc(1000), 8)
    lines = show_maps(t).splitlines(keepends=True)
    assert lines[0] == "00400000-00410000 r-xp 00000000 08:01 12" + " " * 33 + "/usr/bin/app\n"
    assert lines[0].index("/usr") == 73
    assert lines[3] == "00416000-00418000 rw-p 00000000 00:00 0 \n"  # bss: no name, the trailing space stays
    assert lines[4].endswith("[heap]\n") and lines[-1].startswith("7ffffffde000-7ffffffff000 rw-p")
    assert lines[-1].endswith("[stack]\n")


def test_write_to_mprotected_read_only_memory_is_sigsegv_with_error_code_7():
    k, t = boot()
    p = mmap.do_mmap(k, t, 0, 8192, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    k.access(t, p, Access.WRITE)
    mmap.do_mprotect(k, t, p, 8192, mmap.PROT_READ)
    assert (CtlOp.FLUSH_VA, p) in k.flush_log
    assert k.access(t, p, Access.READ) is not None
    assert k.access(t, p, Access.WRITE) is None
    assert "error 7 (SEGV_ACCERR)" in k.dmesg[-1] and t.exit_signal == "SIGSEGV"


def test_munmap_frees_pages_and_shoots_down_each_page():
    k, t = boot()
    p = mmap.do_mmap(k, t, 0, 16 << 12, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(16):
        k.access(t, p + i * 4096, Access.WRITE)
    free0 = k.buddy.nr_free_pages
    k.flush_log.clear()
    mmap.do_munmap(k, t, p, 16 << 12)
    assert [v for op, v in k.flush_log if op == CtlOp.FLUSH_VA][:16] == [p + i * 4096 for i in range(16)]
    assert k.buddy.nr_free_pages >= free0 + 16
    check(k)


def test_large_munmap_flushes_the_whole_address_space_past_the_ceiling():
    k, t = boot(pcide=True)
    p = mmap.do_mmap(k, t, 0, 64 << 12, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    k.flush_log.clear()
    mmap.do_munmap(k, t, p, 64 << 12)
    assert (CtlOp.FLUSH_PCID, t.mm.pcid) in k.flush_log  # 64 pages > tlb_single_page_flush_ceiling (33)


def test_swap_entry_encoding_is_linux_x86_64_with_the_inverted_offset():
    pte = swp_entry_to_pte(0, 1)
    assert pte == 0x07FFFFFFFFFFFC00 and not pte & P  # ~1 in bits 9..58, type 0 in 59..63
    assert pte_to_swp_entry(pte) == (0, 1)
    assert pte_to_swp_entry(swp_entry_to_pte(3, 123456)) == (3, 123456)
    assert swp_entry_to_pte(1, 0) >> 59 == 1


def test_reclaim_swaps_anonymous_pages_out_to_swap_entries_and_back_in():
    k, t = boot(mem=32 << 20, swap=32 << 20)
    p = t.heap.malloc(30 << 20)
    assert t.heap.touch(p, 30 << 20)
    assert k.vmstat["pswpout"] > 0 and t.mm.rss[MM_SWAPENTS] > 0
    swapped = next(va for va, value in _entries(t) if not value & P)
    assert pte_to_swp_entry(t.mm.pt.get_pte(swapped))[1] in k.swap.swap_map
    maj = t.maj_flt
    assert k.access(t, swapped, Access.READ) is not None
    assert t.maj_flt == maj + 1 and k.vmstat["pswpin"] >= 1
    check(k)  # every stamp survived the trip through swap


def _entries(task):
    from model.mm.memory import leaf_entries
    return [(va, v) for vma in task.mm.vmas for va, v in leaf_entries(task.mm, vma.start, vma.end)]


def test_aging_clears_accessed_bits_and_flushes_each_one():
    from model.mm.vmscan import page_referenced
    k, t = boot()
    p = mmap.do_mmap(k, t, 0, 4096, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    k.access(t, p, Access.WRITE)
    page = k.pages[t.mm.pt.lookup(p).pa >> 12]
    k.flush_log.clear()
    assert page_referenced(k, page) is True
    assert not t.mm.pt.lookup(p).value & A and list(k.flush_log) == [(CtlOp.FLUSH_VA, p)]
    assert page_referenced(k, page) is False
    k.access(t, p, Access.READ)  # the walk sets A again
    assert page_referenced(k, page) is True


def test_file_read_fills_the_page_cache_major_fault_first_then_minor():
    from model.mm.filemap import file_read
    k, t = boot()
    f = k.disk.create("/data/f", 64 << 10)
    file_read(k, t, f, 0, 64 << 10)
    assert len(f.mapping.pages) == 16
    p = mmap.do_mmap(k, t, 0, 64 << 10, mmap.PROT_READ, mmap.MAP_PRIVATE, f)
    maj = t.maj_flt
    k.access(t, p, Access.READ)
    assert t.maj_flt == maj  # cached: a minor fault
    g = k.disk.create("/data/g", 8192)
    q = mmap.do_mmap(k, t, 0, 8192, mmap.PROT_READ, mmap.MAP_PRIVATE, g)
    pa = k.access(t, q + 8, Access.READ)
    assert t.maj_flt == maj + 1 and k.mem.read64(pa) == (g.ino << 40) | 8  # the file's contents


def test_access_beyond_the_end_of_a_mapped_file_is_sigbus():
    k, t = boot()
    f = k.disk.create("/data/small", 100)
    p = mmap.do_mmap(k, t, 0, 8192, mmap.PROT_READ, mmap.MAP_PRIVATE, f)
    assert k.access(t, p, Access.READ) is not None
    assert k.access(t, p + 4096, Access.READ) is None and t.exit_signal == "SIGBUS"


def test_shared_file_mapping_dirties_the_page_cache_and_sync_writes_it_back():
    from model.mm.filemap import sync
    k, t = boot()
    f = k.disk.create("/data/t", 16 << 10)
    p = mmap.do_mmap(k, t, 0, 16 << 10, 3, mmap.MAP_SHARED, f)
    k.access(t, p, Access.READ)
    assert not t.mm.pt.lookup(p).writable  # read fault on a shared file page: write-protected for dirty tracking
    k.access(t, p, Access.WRITE)
    page = f.mapping.pages[0]
    assert page.dirty and t.mm.pt.lookup(p).writable
    assert sync(k) == 1 and not page.dirty and not t.mm.pt.lookup(p).writable
    assert k.disk.blocks[(f.ino, 0)][:8] == k.mem.read_frame(page.pfn)[:8]


def test_oom_killer_picks_the_largest_badness_logs_like_the_kernel_and_spares_adj_minus_1000():
    k = Kernel(32 << 20)
    small = fork.spawn(k, "small")
    big = fork.spawn(k, "big", oom_score_adj=-1000)
    hog = fork.spawn(k, "hog")
    for task, size in ((small, 1 << 20), (big, 12 << 20)):
        task.heap = Malloc(k, task)
        task.heap.touch(task.heap.malloc(size), size)
    hog.heap = Malloc(k, hog)
    hog.heap.touch(hog.heap.malloc(24 << 20), 24 << 20)
    assert not hog.alive and big.alive and small.alive and k.vmstat["oom_kill"] == 1
    line = next(x for x in k.dmesg if x.startswith("Out of memory: Killed process"))
    assert line.startswith(f"Out of memory: Killed process {hog.pid} (hog) total-vm:")
    for field in ("anon-rss:", "kB, file-rss:", "kB, shmem-rss:", "kB, UID:0 pgtables:", "kB oom_score_adj:0"):
        assert field in line
    check(k)


def test_oom_badness_is_rss_plus_swap_plus_page_tables_scaled_by_oom_score_adj():
    from model.mm.oom_kill import oom_badness
    k, t = boot()
    base = oom_badness(t, 10000)
    assert base == t.mm.rss_pages + t.mm.rss[MM_SWAPENTS] + t.mm.pt.table_pages - 1
    t.oom_score_adj = 500
    assert oom_badness(t, 10000) == base + 500 * 10
    t.oom_score_adj = -1000
    assert oom_badness(t, 10000) is None


def test_map_hugetlb_maps_a_2m_leaf_from_the_pool_and_fails_with_enomem_when_short():
    k, t = boot(mem=128 << 20, hugepages=2)
    p = mmap.do_mmap(k, t, 0, 4 << 20, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_HUGETLB)
    assert p % (2 << 20) == 0 and k.hugetlb.resv[PageSize.SIZE_2M] == 2
    k.access(t, p + 12345, Access.WRITE)
    leaf = t.mm.pt.lookup(p)
    assert leaf.size == PageSize.SIZE_2M and leaf.value & PS and k.hugetlb.resv[PageSize.SIZE_2M] == 1
    with pytest.raises(mmap.SyscallError):
        mmap.do_mmap(k, t, 0, 2 << 20, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_HUGETLB)
    mmap.do_munmap(k, t, p, 4 << 20)
    assert k.hugetlb.resv[PageSize.SIZE_2M] == 0 and k.hugetlb.nr_free(PageSize.SIZE_2M) == 2
    check(k)


def test_pcids_tag_cr3_and_a_context_switch_keeps_entries_unless_a_flush_is_owed():
    k = Kernel(64 << 20, pcide=True)
    a, b = fork.spawn(k, "a"), fork.spawn(k, "b")
    assert a.mm.pcid and a.mm.pcid != b.mm.pcid
    k.access(a, a.mm.start_stack - 8, Access.READ)
    op, value = k.flush_log[-1]
    assert op == CtlOp.WRITE_CR3 and value == a.mm.pt.pml4 | a.mm.pcid | CR3_NOFLUSH
    b.heap = Malloc(k, b)
    mmap.do_mprotect(k, b, b.mm.vmas[2].start, 8192, mmap.PROT_READ)  # b not running: flush deferred
    assert b.mm.tlb_flush_pending
    k.switch_to(b)
    assert k.flush_log[-1] == (CtlOp.WRITE_CR3, b.mm.pt.pml4 | b.mm.pcid)  # no NOFLUSH bit: flushes b's PCID


def test_exit_frees_every_page_table_and_kernel_object():
    k = Kernel(64 << 20)
    free0 = k.buddy.nr_free_pages
    t = fork.spawn(k, "app")
    t.heap = Malloc(k, t)
    t.heap.touch(t.heap.malloc(1 << 20), 1 << 20)
    fork.do_exit(k, t, None, "exit")
    assert k.pgtable_pages.nr_pages == 0 and k.stack_pages.nr_pages == 0 and not k.tasks
    assert {p.kind for p in k.pages.values()} == {"file", "buffer"}  # only the page cache stays
    assert k.buddy.nr_free_pages == free0 - len(k.pages) - k.slab_pages.nr_pages
    check(k)


def test_kernel_writes_pte_with_accessed_set_and_dirty_on_write_faults_like_mk_pte():
    k, t = boot()
    p = mmap.do_mmap(k, t, 0, 8192, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    k.access(t, p, Access.WRITE)
    value = t.mm.pt.lookup(p).value
    assert value & (P | RW | A | D) == P | RW | A | D


def test_brk_aslr_is_a_page_offset_below_1g():
    """arch/x86/kernel/process.c arch_randomize_brk(): randomize_page(mm->brk, SZ_1G) on x86-64, so the
    break lands on a page boundary anywhere in the 1 GiB above bss (not 32 MiB, the 32-bit range)."""
    offsets = []
    for seed in range(40):
        k = Kernel(64 << 20, seed=seed, aslr=True)
        t = fork.spawn(k, "app")
        offsets.append(t.mm.start_brk - (fork.ELF_BASE + fork.TEXT + fork.RODATA + fork.DATA + fork.BSS))
    assert all(0 <= o < 1 << 30 and o % 4096 == 0 for o in offsets)
    assert max(offsets) > 32 << 20


def test_fork_copies_page_tables_only_of_vmas_with_anonymous_pages():
    """mm/memory.c vma_needs_copy(): without an anon_vma (a shared mapping, a file mapping only read) the
    child's entries stay empty for its faults to fill; a private mapping with anonymous pages is copied."""
    k, t = boot()
    f = k.disk.create("/f", 64 << 10)
    read_only = mmap.do_mmap(k, t, 0, 64 << 10, 1, mmap.MAP_PRIVATE, f)
    cow = mmap.do_mmap(k, t, 0, 64 << 10, 3, mmap.MAP_PRIVATE, f)
    k.access(t, read_only, Access.READ)
    k.access(t, cow, Access.READ)
    k.access(t, cow + 4096, Access.WRITE)  # a private copy: the VMA gets an anon_vma
    child = fork.do_fork(k, t, "child")
    assert t.mm.pt.lookup(read_only) is not None and child.mm.pt.lookup(read_only) is None
    assert child.mm.pt.lookup(cow) is not None and child.mm.pt.lookup(cow + 4096) is not None
    minflt = child.min_flt
    k.access(child, read_only, Access.READ)
    assert child.min_flt == minflt + 1 and child.mm.pt.lookup(read_only + 15 * 4096) is not None  # fault-around
    check(k)
