"""The kernel model's consistency checks, run after every workload in the tests.

``check(kernel)`` raises ``InvariantError`` listing every broken rule:

- every frame of the buddy zone is either free or held by exactly one owner
  (a slab, a page-table page, a kernel stack, or a user page), and the buddy
  allocator agrees on the block and its order and that it is not free; its
  free lists add up to its free counter; the hugetlb pool's pages are free in
  the pool or in use, never both;
- every present leaf maps the zero page (read-only) or a page whose reverse
  map lists that (mm, va), never a free frame, and the reverse maps hold
  nothing else; the RSS counters equal what the page tables map;
- every swap slot's swap_map count equals the references to it (swap PTEs and
  shmem mapping entries), and the device's free and used slots add up;
- a writable PTE never maps an anonymous page that another PTE also maps
  (copy-on-write would be broken); every leaf lies inside a VMA of its mm;
  VMAs do not overlap;
- page-cache pages sit at their index in their mapping, every LRU page is on
  the list it says, no anonymous page is left unmapped, and each task's
  stamps (values it stored) are still where it left them: in its page or in
  the swap slot its PTE names.

tests/conftest.py installs ``check`` as the workload runner's ``AFTER_RUN``
hook, and tests/test_invariants.py feeds it each kind of corruption.
"""

from __future__ import annotations

from collections import Counter

from model.mm.memory import leaf_entries, pte_pfn
from model.mm.mm_types import MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES, MM_SWAPENTS
from model.mm.swapfile import pte_to_swp_entry
from model.x86.pte import PAGE_SHIFT, RW, P


class InvariantError(AssertionError):
    pass


def check(k) -> None:
    errors: list[str] = []
    _frames(k, errors)
    _mappings(k, errors)
    _caches(k, errors)
    if errors:
        raise InvariantError(f"{len(errors)} invariant(s) broken:\n  " + "\n  ".join(errors[:40]))


def _frames(k, errors: list[str]) -> None:
    owners: dict[int, str] = {}
    owned_pages = 0
    blocks = [(pfn, order, "slab") for pfn, order in k.slab_pages.blocks.items()]
    blocks += [(pfn, order, "page table") for pfn, order in k.pgtable_pages.blocks.items()]
    blocks += [(pfn, order, "kernel stack") for pfn, order in k.stack_pages.blocks.items()]
    blocks += [(p.pfn, p.order, f"{p.kind} page") for p in k.pages.values() if p.kind != "hugetlb"]
    for pfn, order, who in blocks:
        if pfn in owners:
            errors.append(f"pfn {pfn:#x}: owned by both {owners[pfn]} and {who}")
        owners[pfn] = who
        owned_pages += 1 << order
        if k.buddy.allocated_order(pfn) != order:
            errors.append(f"pfn {pfn:#x} ({who}): the buddy allocator does not hold it as an order-{order} block")
        if k.buddy.is_free(pfn):
            errors.append(f"pfn {pfn:#x} ({who}): also on a buddy free list")
    listed = sum(n << order for order, n in enumerate(k.buddy.free_area))
    if listed != k.buddy.nr_free_pages:
        errors.append(f"buddy free lists hold {listed} pages, the free counter says {k.buddy.nr_free_pages}")
    if owned_pages + k.buddy.nr_free_pages != k.buddy.nr_pages:
        errors.append(f"buddy zone: {k.buddy.nr_free_pages} free + {owned_pages} owned != {k.buddy.nr_pages} pages "
                      f"(a leak or a double count)")
    for size, free in k.hugetlb.free_pages.items():
        for pfn in free:
            if pfn in k.pages:
                errors.append(f"huge page {pfn:#x}: both free in the pool and in use")
        used = sum(1 for p in k.pages.values() if p.kind == "hugetlb" and p.order == size.shift - PAGE_SHIFT)
        if used + len(free) != k.hugetlb.total[size]:
            errors.append(f"hugetlb {size.label}: {used} used + {len(free)} free != {k.hugetlb.total[size]}")


def _mappings(k, errors: list[str]) -> None:
    rmap_seen: Counter = Counter()
    swap_refs: Counter = Counter()
    for task in k.tasks.values():
        mm = task.mm
        rss = Counter()
        vmas = mm.vmas
        for a, b in zip(vmas, vmas[1:]):
            if a.end > b.start:
                errors.append(f"pid {task.pid}: VMAs {a.start:#x}-{a.end:#x} and {b.start:#x}-{b.end:#x} overlap")
        entries = {}
        for vma in vmas:
            for va, value in leaf_entries(mm, vma.start, vma.end):
                entries[va] = (value, vma)
        for leaf in mm.pt.leaves():
            if leaf.va not in entries:
                errors.append(f"pid {task.pid}: {leaf.va:#x} is mapped outside every VMA")
        for va, (value, vma) in entries.items():
            if not value & P:
                swap_refs[pte_to_swp_entry(value)[1]] += 1
                rss[MM_SWAPENTS] += 1
                continue
            pfn = pte_pfn(value)
            if pfn == k.zero_pfn:
                if value & RW:
                    errors.append(f"pid {task.pid}: {va:#x} maps the zero page writable")
                continue
            page = k.pages.get(pfn)
            if page is None and k.buddy.is_free(pfn):
                errors.append(f"pid {task.pid}: {va:#x} maps pfn {pfn:#x}, which is free in the buddy allocator")
                continue
            if page is None or (mm, va) not in page.rmap:
                errors.append(f"pid {task.pid}: {va:#x} maps pfn {pfn:#x}, which does not list this mapping")
                continue
            rmap_seen[(page.pfn, id(mm), va)] += 1
            counter = {"anon": MM_ANONPAGES, "file": MM_FILEPAGES, "buffer": MM_FILEPAGES,
                       "shmem": MM_SHMEMPAGES}.get(page.kind)
            if counter:
                rss[counter] += 1
            if value & RW and page.kind == "anon" and page.mapcount > 1:
                errors.append(f"pid {task.pid}: {va:#x} is writable but its anonymous page is mapped "
                              f"{page.mapcount} times (COW broken)")
        for key in (MM_ANONPAGES, MM_FILEPAGES, MM_SHMEMPAGES, MM_SWAPENTS):
            if rss[key] != mm.rss[key]:
                errors.append(f"pid {task.pid}: RSS {key} counter {mm.rss[key]} != {rss[key]} in the page tables")
        _stamps(k, task, entries, errors)
    for page in k.pages.values():
        for mm, va in page.rmap:
            if (page.pfn, id(mm), va) not in rmap_seen:
                errors.append(f"{page}: its reverse map lists {va:#x}, whose PTE does not map it")
    for mapping in _shared_mappings(k):
        for offset in mapping.swapped.values():
            swap_refs[offset] += 1
    _swap(k, swap_refs, errors)


def _swap(k, refs: Counter, errors: list[str]) -> None:
    """swap_map[offset] is the number of references (PTEs, shmem entries) to the slot; the rest are free."""
    swap = k.swap
    wrong = sorted(o for o in set(refs) | set(swap.swap_map) if refs[o] != swap.swap_map.get(o, 0))
    for offset in wrong[:8]:
        errors.append(f"swap slot {offset}: swap_map counts {swap.swap_map.get(offset, 0)}, "
                      f"{refs[offset]} references hold it")
    if swap.free_pages + len(swap.swap_map) != swap.total_pages:
        errors.append(f"swap device: {swap.free_pages} free + {len(swap.swap_map)} in use != "
                      f"{swap.total_pages} slots")


def _shared_mappings(k):
    seen = {}
    for task in k.tasks.values():
        for vma in task.mm.vmas:
            if vma.mapping is not None:
                seen[id(vma.mapping)] = vma.mapping
    return seen.values()


def _stamps(k, task, entries, errors: list[str]) -> None:
    for va, stamp in task.stamps.items():
        page_va = va & ~0xFFF
        entry = entries.get(page_va)
        if entry is None:  # inside a huge page?
            for base, (value, vma) in entries.items():
                if base <= va < base + vma.page_size.bytes:
                    entry = (value, vma)
                    page_va = base
                    break
        if entry is None:
            errors.append(f"pid {task.pid}: stored {stamp} at {va:#x}, now nothing is mapped there")
            continue
        value, _ = entry
        offset = va - page_va
        if value & P:
            got = k.mem.read64((pte_pfn(value) << PAGE_SHIFT) + offset)
        else:
            data = k.swap.read(pte_to_swp_entry(value)[1])
            got = int.from_bytes(data[offset:offset + 8], "little")
        if got != stamp:
            errors.append(f"pid {task.pid}: {va:#x} holds {got}, the task stored {stamp}")


def _caches(k, errors: list[str]) -> None:
    for page in k.pages.values():
        if page.mapping is not None and page.mapping.pages.get(page.index) is not page:
            errors.append(f"{page}: not at index {page.index} of its mapping")
        if page.kind == "hugetlb":
            continue
        if page.lru is None or k.lru.lists[page.lru].get(page.pfn) is not page:
            errors.append(f"{page}: not on the LRU list {page.lru}")
        if page.kind == "anon" and not page.rmap:
            errors.append(f"{page}: anonymous page with no mapping (leaked)")
    on_lru = sum(len(lst) for lst in k.lru.lists.values())
    if on_lru != sum(1 for p in k.pages.values() if p.kind != "hugetlb"):
        errors.append(f"LRU lists hold {on_lru} pages, {len(k.pages)} user pages exist")
