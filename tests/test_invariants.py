"""The invariant checker catches each kind of corruption it claims to check (model/mm/invariants.py).

A healthy machine (anonymous, COW-shared, shmem, file, swapped and hugetlb pages in two processes) passes;
each test then breaks one rule the way a kernel bug would and expects the checker to name that rule.
"""

from __future__ import annotations

import pytest

from model.mm import fork, mmap, vmscan
from model.mm.invariants import InvariantError, check
from model.mm.kernel import Kernel
from model.mm.memory import pte_pfn
from model.mm.mm_types import MM_ANONPAGES, MM_SWAPENTS
from model.user import workload
from model.user.malloc import Malloc
from model.user.workload import run_workload
from model.x86.pte import Access


class Machine:
    def __init__(self) -> None:
        k = self.k = Kernel(48 << 20, 16 << 20, hugepages=2)
        p = self.parent = fork.spawn(k, "parent")
        p.heap = Malloc(k, p)
        self.anon = mmap.do_mmap(k, p, 0, 8 << 12, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.shm = mmap.do_mmap(k, p, 0, 4 << 12, 3, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.huge = mmap.do_mmap(k, p, 0, 2 << 20, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_HUGETLB)
        for base, n in ((self.anon, 8), (self.shm, 4)):
            for i in range(n):
                k.access(p, base + (i << 12), Access.WRITE)
        k.access(p, self.huge, Access.WRITE)
        self.child = fork.do_fork(k, p, "child")
        k.access(self.child, self.shm, Access.READ)
        cold = self.page_at(p, self.anon + 7 * 4096)
        vmscan.check_references(k, cold)
        assert vmscan.shrink_page(k, cold, "direct") == "swap"  # one slot, held by both processes' PTEs
        check(k)

    def page_at(self, task, va):
        return self.k.pages[pte_pfn(task.mm.pt.get_pte(va))]


def _two_owners(m):
    pfn = next(iter(m.k.pgtable_pages.blocks))
    m.k.slab_pages.blocks[pfn] = 0


def _free_frame_still_mapped(m):
    page = m.page_at(m.parent, m.shm)
    vmscan.lru_del(m.k, page)
    del m.k.pages[page.pfn], page.mapping.pages[page.index]
    m.k.buddy.free_pages(page.pfn, 0)


def _leaked_swap_slot(m):
    m.k.swap.write(m.k.swap.alloc_slot(), bytes(4096), 1)


def _swap_count_short(m):
    m.k.swap.put(next(iter(m.k.swap.swap_map)))  # one PTE still names a slot that now counts one holder


def _wrong_buddy_order(m):
    pfn = m.parent.stack_pfn
    m.k.buddy._allocated[pfn] = 1


def _free_counter_off(m):
    m.k.buddy._nr_free += 1


def _rmap_phantom(m):
    m.page_at(m.parent, m.anon).rmap.append((m.child.mm, 0x1000))


def _rmap_missing(m):
    page = m.page_at(m.parent, m.anon)
    page.rmap.remove((m.parent.mm, m.anon))


def _lru_lost(m):
    page = m.page_at(m.parent, m.anon + 4096)
    del m.k.lru.lists[page.lru][page.pfn]


def _rss_counter(m):
    m.parent.mm.rss[MM_ANONPAGES] += 1


def _swapents_counter(m):
    m.child.mm.rss[MM_SWAPENTS] -= 1


def _cow_broken(m):
    m.parent.mm.pt.protect(m.anon, writable=True, user=True, nx=True)


def _zero_page_writable(m):
    va = mmap.do_mmap(m.k, m.parent, 0, 4096, 3, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.k.access(m.parent, va, Access.READ)  # maps the shared zero page read-only
    m.parent.mm.pt.protect(va, writable=True, user=True, nx=True)


def _outside_vma(m):
    mmap.find_vma(m.parent.mm, m.anon).start += 4096


def _vmas_overlap(m):
    vmas = m.parent.mm.vmas
    below = vmas[vmas.index(mmap.find_vma(m.parent.mm, m.anon)) - 1]
    below.end = m.anon + 4096


def _stamp_lost(m):
    pa = m.parent.mm.pt.lookup(m.anon + 4096).pa
    va = max(v for v in m.parent.stamps if m.anon + 4096 <= v < m.anon + 8192)
    m.k.mem.write64(pa + (va & 0xFFF), 12345)


def _page_cache_index(m):
    page = m.page_at(m.parent, m.shm)
    page.index += 1


def _anon_leak(m):
    m.k.alloc_page("anon")


def _huge_free_and_used(m):
    page = next(p for p in m.k.pages.values() if p.kind == "hugetlb")
    m.k.hugetlb.free_pages[next(iter(m.k.hugetlb.free_pages))].append(page.pfn)


CORRUPTIONS = [
    (_two_owners, "owned by both slab and page table"),
    (_free_frame_still_mapped, "which is free in the buddy allocator"),
    (_leaked_swap_slot, "swap_map counts 1, 0 references hold it"),
    (_swap_count_short, "swap_map counts 1, 2 references hold it"),
    (_wrong_buddy_order, "the buddy allocator does not hold it as an order-2 block"),
    (_free_counter_off, "the free counter says"),
    (_rmap_phantom, "whose PTE does not map it"),
    (_rmap_missing, "which does not list this mapping"),
    (_lru_lost, "not on the LRU list"),
    (_rss_counter, "RSS anon counter"),
    (_swapents_counter, "RSS swap counter"),
    (_cow_broken, "COW broken"),
    (_zero_page_writable, "maps the zero page writable"),
    (_outside_vma, "is mapped outside every VMA"),
    (_vmas_overlap, "overlap"),
    (_stamp_lost, "the task stored"),
    (_page_cache_index, "not at index"),
    (_anon_leak, "anonymous page with no mapping (leaked)"),
    (_huge_free_and_used, "both free in the pool and in use"),
]


@pytest.mark.parametrize("corrupt,message", CORRUPTIONS, ids=[c.__name__.lstrip("_") for c, _ in CORRUPTIONS])
def test_the_checker_names_each_kind_of_corruption(corrupt, message):
    m = Machine()
    corrupt(m)
    with pytest.raises(InvariantError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check(m.k)


def test_every_workload_run_in_the_tests_ends_under_the_checker():
    """The AFTER_RUN hook (tests/conftest.py): a workload that leaves a leak fails its test."""
    assert workload.AFTER_RUN == [check]

    def leak(k):
        def after(step):
            if step.op.name == "report":
                k.swap.write(k.swap.alloc_slot(), bytes(4096), 1)
        return after

    with pytest.raises(InvariantError, match="swap slot"):
        run_workload("swap-pressure", listeners=[leak])
