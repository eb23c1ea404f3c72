"""The slab allocator against the behaviour of Linux mm/slub.c and mm/slab_common.c."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.mm.page_alloc import BadFree, BuddyAllocator
from model.mm.slub import SlabAllocator, SlabError, calculate_order, get_order
from model.x86.pte import PAGE_SIZE


def make(nr_pages: int = 4096, start_pfn: int = 0) -> SlabAllocator:
    return SlabAllocator(BuddyAllocator(start_pfn, nr_pages))


def state(sa: SlabAllocator):
    """Everything observable: every cache's slabinfo figures and the buddy's free memory."""
    return sa.slabinfo(), sa.buddy.free_area, sa.buddy.nr_free_pages, sa.unreclaimable_bytes


# --- kmalloc size classes --------------------------------------------------------------------


@pytest.mark.parametrize("size, cache", [
    (1, "kmalloc-8"), (8, "kmalloc-8"), (9, "kmalloc-16"), (33, "kmalloc-64"),
    (64, "kmalloc-64"), (65, "kmalloc-96"), (96, "kmalloc-96"), (97, "kmalloc-128"),
    (100, "kmalloc-128"), (129, "kmalloc-192"), (192, "kmalloc-192"), (193, "kmalloc-256"),
    (1000, "kmalloc-1k"), (2048, "kmalloc-2k"), (4097, "kmalloc-8k"), (8192, "kmalloc-8k"),
])
def test_kmalloc_size_classes(size, cache):
    """include/linux/slab.h __kmalloc_index(): kmalloc(100) comes from kmalloc-128, the
    96 and 192 classes catch 65..96 and 129..192, and the largest cache is kmalloc-8k
    (KMALLOC_SHIFT_HIGH = PAGE_SHIFT + 1 under SLUB)."""
    sa = make()
    assert sa.kmalloc_cache(size).name == cache
    addr = sa.kmalloc(size)
    assert sa.kmalloc_cache(size).active_objs == 1
    sa.kfree(addr)


def test_kmalloc_caches_are_created_at_boot():
    """create_kmalloc_caches() makes kmalloc-96 and kmalloc-192 first, then 8 .. 8k;
    list_add() puts each new cache at the head of slab_caches, so slabinfo lists
    the newest first and kmalloc-96 last."""
    names = [c.name for c in make().caches]
    assert names == ["kmalloc-8k", "kmalloc-4k", "kmalloc-2k", "kmalloc-1k", "kmalloc-512",
                     "kmalloc-256", "kmalloc-128", "kmalloc-64", "kmalloc-32", "kmalloc-16",
                     "kmalloc-8", "kmalloc-192", "kmalloc-96"]


def test_kmalloc_large_goes_to_the_page_allocator():
    """Above KMALLOC_MAX_CACHE_SIZE (8 KiB) kmalloc_large() takes 2^get_order(size)
    pages straight from the buddy: 8193 bytes need 3 pages, so order 2 (4 pages).
    Those pages count as NR_SLAB_UNRECLAIMABLE_B; kfree gives them back."""
    sa = make()
    free = sa.buddy.nr_free_pages
    addr = sa.kmalloc(8193)
    assert addr % PAGE_SIZE == 0
    assert sa.buddy.allocated_order(addr // PAGE_SIZE) == 2
    assert sa.buddy.nr_free_pages == free - 4
    assert sa.unreclaimable_bytes == 4 * PAGE_SIZE
    assert all(c.nr_slabs == 0 for c in sa.caches)
    sa.kfree(addr)
    assert sa.buddy.nr_free_pages == free and sa.unreclaimable_bytes == 0


def test_get_order():
    """include/asm-generic/getorder.h: get_order(4096) = 0, get_order(4097) = 1, get_order(16 KiB) = 2."""
    assert [get_order(s) for s in (1, 4096, 4097, 8192, 8193, 16384, 4 << 20)] == [0, 0, 1, 1, 2, 2, 10]


def test_kmalloc_refuses_impossible_sizes():
    """Size 0 has no object (Linux returns ZERO_SIZE_PTR, which has no safe value among
    physical addresses here); above 4 MiB no buddy block is large enough."""
    sa = make()
    with pytest.raises(ValueError, match="size must be >= 1"):
        sa.kmalloc(0)
    with pytest.raises(ValueError, match="largest buddy block"):
        sa.kmalloc((4 << 20) + 1)


def test_kmalloc_returns_none_when_memory_runs_out():
    """Like alloc_pages(), kmalloc returns NULL when the buddy cannot supply a slab: a
    one-page zone can hold a kmalloc-8 slab (order 0) but not a kmalloc-4k slab (order 3)."""
    sa = make(nr_pages=1)
    assert sa.kmalloc(4096) is None
    assert sa.kmalloc(8) is not None
    assert sa.kmalloc(8192 + 1) is None


def test_kfree_null_is_a_no_op():
    """kfree(NULL) does nothing."""
    sa = make()
    before = state(sa)
    sa.kfree(None)
    assert state(sa) == before


# --- slab geometry: calculate_order() and calculate_sizes() ------------------------------------


def test_slab_orders_worked_by_hand():
    """mm/slub.c calculate_order() with one CPU: min_objects = 4 * (fls(1) + 1) = 8, then
    the smallest order wasting at most 1/16.
    96 bytes: get_order(8 * 96 = 768) = 0 and 4096 % 96 = 64 <= 256 -> order 0, 42 objects.
    704 bytes: get_order(5632) = 1 and 8192 % 704 = 448 <= 512 -> order 1, 11 objects.
    4096 bytes: get_order(32 KiB) = 3 -> order 3, 8 objects.
    8192 bytes: only 4 fit in an order-3 (slub_max_order) slab, so min_objects = 4 -> order 3."""
    assert calculate_order(96) == 0
    assert calculate_order(704) == 1
    assert calculate_order(4096) == 3
    assert calculate_order(8192) == 3
    sa = make()
    assert (sa.kmalloc_cache(96).objects, sa.kmalloc_cache(96).pages_per_slab) == (42, 1)
    assert (sa.kmalloc_cache(8192).objects, sa.kmalloc_cache(8192).pages_per_slab) == (4, 8)


def test_objects_beyond_slub_max_order_get_their_own_order():
    """An object too large for an order-3 slab gets get_order(size): 40000 bytes -> order 4, one object."""
    assert calculate_order(40000) == 4
    cache = make().kmem_cache_create("big", 40000)
    assert (cache.order, cache.objects) == (4, 1)


def test_cache_size_is_rounded_to_word_and_alignment():
    """calculate_sizes(): size = ALIGN(ALIGN(object_size, sizeof(void *)), align), and
    calculate_alignment() never goes below sizeof(void *) = 8."""
    sa = make()
    assert sa.kmem_cache_create("a", 20).size == 24
    assert sa.kmem_cache_create("b", 20, align=1).align == 8
    assert sa.kmem_cache_create("c", 20, align=64).size == 64
    assert sa.kmem_cache_create("d", 3).size == 8


def test_objects_are_laid_out_from_the_slab_start_in_address_order():
    """A new slab's freelist runs in address order from the first byte of its first page
    (no CONFIG_SLAB_FREELIST_RANDOM), so consecutive allocations are size apart."""
    sa = make()
    cache = sa.kmem_cache_create("obj", 100)  # size 104
    first = cache.alloc()
    assert first % PAGE_SIZE == 0
    assert [cache.alloc() - first for _ in range(3)] == [104, 208, 312]


def test_freelist_is_lifo():
    """SLUB pushes a freed object on the slab's freelist and pops from it: the next
    allocation reuses the object just freed."""
    sa = make()
    a = [sa.kmalloc(64) for _ in range(4)]
    sa.kfree(a[1])
    assert sa.kmalloc(64) == a[1]


def test_power_of_two_kmalloc_is_naturally_aligned():
    """Documentation/core-api/memory-allocation.rst: kmalloc of a power-of-two size is
    aligned to that size."""
    sa = make()
    for size in (8, 16, 64, 256, 512, 1024, 2048, 4096, 8192):
        for _ in range(10):
            assert sa.kmalloc(size) % size == 0


def test_bad_cache_parameters():
    """kmem_cache_create needs a positive size and a power-of-two alignment."""
    sa = make()
    with pytest.raises(ValueError, match="size 0"):
        sa.kmem_cache_create("zero", 0)
    with pytest.raises(ValueError, match="align 24"):
        sa.kmem_cache_create("odd", 64, align=24)


# --- empty slabs: min_partial and shrink ---------------------------------------------------------


def test_min_partial_empty_slabs_are_kept_then_freed():
    """__slab_free(): a slab that becomes empty is discarded when the node already has
    nr_partial >= min_partial slabs (counting itself), otherwise it stays on the partial
    list.  kmalloc-4k: min_partial = ilog2(4096) / 2 = 6, 8 objects per order-3 slab.
    Filling 10 slabs then freeing them slab by slab keeps the first 5 to empty (the
    partial list then holds 1..5 slabs) and frees every later one (6 on the list)."""
    sa = make()
    cache = sa.kmalloc_cache(4096)
    assert cache.min_partial == 6
    free = sa.buddy.nr_free_pages
    objs = [sa.kmalloc(4096) for _ in range(80)]
    assert cache.nr_slabs == 10 and cache.nr_partial == 0
    for addr in objs:
        sa.kfree(addr)
    assert cache.nr_slabs == 5 and cache.active_objs == 0
    assert sa.buddy.nr_free_pages == free - 5 * 8
    assert cache.shrink() == 40
    assert cache.nr_slabs == 0 and sa.buddy.nr_free_pages == free


def test_min_partial_is_clamped():
    """set_min_partial(): ilog2(size) / 2 clamped to [MIN_PARTIAL, MAX_PARTIAL] = [5, 10]."""
    sa = make()
    assert sa.kmalloc_cache(8).min_partial == 5  # ilog2(8) / 2 = 1
    assert sa.kmalloc_cache(8192).min_partial == 6
    assert sa.kmem_cache_create("huge", 4 << 20).min_partial == 10  # ilog2(4 MiB) / 2 = 11


def test_shrink_leaves_slabs_in_use():
    """kmem_cache_shrink() frees only empty slabs."""
    sa = make()
    cache = sa.kmem_cache_create("c", 2048)  # 8 objects per order-2 slab
    objs = [cache.alloc() for _ in range(16)]
    for addr in objs[:8]:
        cache.free(addr)
    assert cache.nr_slabs == 2
    assert cache.shrink() == 4
    assert cache.nr_slabs == 1 and cache.active_objs == 8


def test_allocator_shrink_covers_every_cache():
    """drop_caches-style shrinking walks every cache on slab_caches."""
    sa = make()
    a, b = sa.kmalloc(16), sa.kmalloc(512)
    sa.kfree(a)
    sa.kfree(b)
    assert sa.shrink() == 2
    assert sa.buddy.nr_free_pages == 4096


# --- bad frees and destroy ------------------------------------------------------------------------


def test_bad_kfree_raises_and_changes_nothing():
    """kfree of something kmalloc never returned (an unknown address, a pointer into the
    middle of an object or of a kmalloc_large block, an object freed twice) is a kernel
    bug: it raises BadFree naming the address and leaves every cache and the buddy alone."""
    sa = make()
    obj = sa.kmalloc(64)
    big = sa.kmalloc(20000)
    gone = sa.kmalloc(64)
    sa.kfree(gone)
    cases = [
        (obj + 8, "not the start of an object"),
        (big + 64, "inside a kmalloc_large"),
        (gone, "double free"),
        (PAGE_SIZE * 4000, "not allocated by the slab allocator"),
    ]
    for addr, rule in cases:
        before = state(sa)
        with pytest.raises(BadFree, match=rule) as info:
            sa.kfree(addr)
        assert f"{addr:#x}" in str(info.value)
        assert state(sa) == before
    sa.kfree(obj)
    sa.kfree(big)


def test_kfree_of_the_slab_leftover_is_refused():
    """An address past the last object of a slab (the leftover tail) is no object:
    kmalloc-96 fits 42 objects in 4096 bytes, leaving 4032..4095 unused."""
    sa = make()
    obj = sa.kmalloc(96)
    with pytest.raises(BadFree, match="not the start of an object"):
        sa.kfree(obj + 42 * 96)


def test_kmem_cache_free_to_the_wrong_cache():
    """cache_from_obj(): freeing an object to a cache it does not belong to is refused."""
    sa = make()
    a = sa.kmem_cache_create("a", 64)
    b = sa.kmem_cache_create("b", 64)
    obj = a.alloc()
    before = state(sa)
    with pytest.raises(BadFree, match="belongs to cache a"):
        b.free(obj)
    assert state(sa) == before
    a.free(obj)


def test_destroy_refuses_while_objects_remain():
    """kmem_cache_destroy() of a cache with live objects: Linux warns "Slab cache still
    has objects" and keeps the cache; here it raises and the cache stays usable.  Once
    empty it frees every slab and leaves slabinfo."""
    sa = make()
    cache = sa.kmem_cache_create("dentry", 192, reclaimable=True)
    objs = [cache.alloc() for _ in range(30)]
    with pytest.raises(SlabError, match="Slab cache still has objects"):
        cache.destroy()
    assert cache in sa.caches
    for addr in objs:
        cache.free(addr)
    cache.destroy()
    assert cache not in sa.caches and "dentry" not in sa.slabinfo()
    assert sa.buddy.nr_free_pages == 4096
    with pytest.raises(SlabError, match="destroyed"):
        cache.alloc()
    with pytest.raises(SlabError, match="already destroyed"):
        cache.destroy()


def test_kmalloc_caches_cannot_be_destroyed():
    """The kmalloc caches live for the whole kernel."""
    sa = make()
    with pytest.raises(SlabError, match="kmalloc caches"):
        sa.kmalloc_cache(64).destroy()


# --- accounting and /proc/slabinfo ----------------------------------------------------------------


def test_sreclaimable_and_sunreclaim():
    """meminfo: pages of SLAB_RECLAIM_ACCOUNT caches are SReclaimable, other slab pages
    (and kmalloc_large blocks) SUnreclaim, counted in whole slabs."""
    sa = make()
    dentry = sa.kmem_cache_create("dentry", 192, reclaimable=True)  # 21 per order-0 slab
    for _ in range(22):
        dentry.alloc()  # 2 slabs
    sa.kmalloc(1024)  # one order-1 slab of kmalloc-1k
    assert sa.reclaimable_bytes == 2 * PAGE_SIZE
    assert sa.unreclaimable_bytes == 2 * PAGE_SIZE


def test_slabinfo_header_is_version_2_1():
    """mm/slab_common.c print_slabinfo_header(), byte for byte."""
    lines = make().slabinfo().split("\n")
    assert lines[0] == "slabinfo - version: 2.1"
    assert lines[1] == ("# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
                        " : tunables <limit> <batchcount> <sharedfactor>"
                        " : slabdata <active_slabs> <num_slabs> <sharedavail>")


def test_slabinfo_cache_line():
    """cache_show(): "%-17s %6lu %6lu %6u %4u %4d" then " : tunables %4u %4u %4u" and
    " : slabdata %6lu %6lu %6lu".  SLUB reports no tunables and every slab active.
    A 100-byte cache has size 104 and 39 objects per page (4096 % 104 = 40 <= 256);
    3 objects use one slab.  A new cache is listed first."""
    sa = make()
    cache = sa.kmem_cache_create("test_cache", 100)
    for _ in range(3):
        cache.alloc()
    line = sa.slabinfo().split("\n")[2]
    assert line == ("test_cache        " "     3     39    104   39    1"
                    " : tunables    0    0    0 : slabdata      1      1      0")


# --- properties -------------------------------------------------------------------------------------


sizes = st.one_of(st.integers(1, 8192), st.integers(8193, 40000))


@settings(max_examples=100, deadline=None)
@given(start=st.integers(0, 1500), data=st.data())
def test_slab_properties(start, data):
    """Under any mix of kmalloc, kfree and a private cache: live objects never overlap,
    each lies inside its slab's pages (a buddy block of the cache's order) and is aligned;
    freeing everything and shrinking returns every page to the buddy."""
    sa = SlabAllocator(BuddyAllocator(start, 2048))
    fresh = sa.buddy.free_area
    align = data.draw(st.sampled_from([8, 16, 64, 256]), label="align")
    private = sa.kmem_cache_create("private", data.draw(st.integers(1, 3000), label="objsize"), align=align)
    live: dict[int, int] = {}  # address -> bytes it spans
    for _ in range(data.draw(st.integers(0, 150), label="steps")):
        action = data.draw(st.sampled_from(["kmalloc", "private", "free"]), label="action")
        if action == "free" and live:
            addr = data.draw(st.sampled_from(sorted(live)), label="addr")
            del live[addr]
            sa.kfree(addr)
            continue
        if action == "private":
            cache, addr = private, private.alloc()
        else:
            size = data.draw(sizes, label="size")
            cache = sa.kmalloc_cache(size) if size <= 8192 else None
            addr = sa.kmalloc(size)
        if addr is None:
            continue
        if cache is None:  # kmalloc_large: a whole buddy block
            order = sa.buddy.allocated_order(addr // PAGE_SIZE)
            assert order is not None and addr % PAGE_SIZE == 0
            live[addr] = PAGE_SIZE << order
            continue
        assert addr % cache.align == 0
        head = (addr // PAGE_SIZE) & ~((1 << cache.order) - 1)
        assert sa.buddy.allocated_order(head) == cache.order
        assert addr + cache.size <= head * PAGE_SIZE + (PAGE_SIZE << cache.order)
        live[addr] = cache.size
    spans = sorted(live.items())
    for (a, n), (b, _) in zip(spans, spans[1:]):
        assert a + n <= b
    for addr in live:
        sa.kfree(addr)
    sa.shrink()
    assert sa.buddy.nr_free_pages == 2048
    assert sa.buddy.free_area == fresh
    assert sa.reclaimable_bytes == sa.unreclaimable_bytes == 0
