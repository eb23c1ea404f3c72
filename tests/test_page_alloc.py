"""The buddy allocator against the behaviour of Linux mm/page_alloc.c."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.config import ConfigError
from model.mm.page_alloc import (
    MAX_ORDER,
    BadFree,
    BuddyAllocator,
    Watermarks,
    calculate_min_free_kbytes,
    setup_per_zone_wmarks,
)


def snapshot(b: BuddyAllocator):
    """Everything observable about a zone, page by page."""
    pages = range(b.start_pfn, b.end_pfn)
    return (b.free_area, b.nr_free_pages, [b.is_free(p) for p in pages], [b.allocated_order(p) for p in pages])


# --- initial free memory ----------------------------------------------------------


def test_zone_is_carved_into_maximal_aligned_blocks():
    """memblock __free_pages_memory(): each block takes the largest order its start
    pfn is aligned to (capped at MAX_ORDER) that still fits before the end.

    [3, 2053): 3 is odd -> order 0; 4 -> order 2; 8, 16, ..., 512 -> orders 3..9;
    1024 -> order 10 (ends at 2048); 2048 is aligned to 2^11 but only 5 pages
    remain -> order 2 (2048..2051); 2052 -> order 0.
    """
    b = BuddyAllocator(start_pfn=3, nr_pages=2050)
    assert b.free_area == [2, 0, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert b.nr_free_pages == 2050
    assert all(b.is_free(p) for p in range(3, 2053))
    assert not b.is_free(2) and not b.is_free(2053)


def test_fresh_zone_hands_out_its_lowest_block_first():
    """__free_pages_core() frees boot memory with FPI_TO_TAIL, so the free lists run in
    ascending pfn order and a fresh 8 MiB zone serves pfn 0, then pfn 1024."""
    b = BuddyAllocator(start_pfn=0, nr_pages=2048)
    assert b.alloc_pages(10) == 0
    assert b.alloc_pages(10) == 1024


def test_blocks_never_exceed_max_order():
    """MAX_PAGE_ORDER = 10: a 4 MiB-aligned 8 MiB zone is two order-10 blocks, not one order-11."""
    b = BuddyAllocator(start_pfn=0, nr_pages=2048)
    assert b.free_area == [0] * 10 + [2]
    assert len(b.free_area) == MAX_ORDER + 1 == 11


# --- allocation: expand() -------------------------------------------------------------


def test_alloc_splits_smallest_block_and_hands_out_low_half():
    """expand(): splitting an order-10 block for an order-0 request keeps the lowest
    page and puts the upper halves back, one block at each order 0..9."""
    b = BuddyAllocator(start_pfn=0, nr_pages=1024)
    assert b.alloc_pages(0) == 0
    assert b.free_area == [1] * 10 + [0]
    assert b.allocated_order(0) == 0
    for order in range(10):  # the upper half put back at each step starts at 2^order
        assert b.is_free(1 << order)


def test_alloc_prefers_the_smallest_sufficient_block():
    """__rmqueue_smallest() searches upward from the requested order: with a free
    order-0 page and an order-10 block, an order-0 request must not split the big one."""
    b = BuddyAllocator(start_pfn=1023, nr_pages=1025)  # pfn 1023 (order 0) + [1024, 2048) (order 10)
    assert b.alloc_pages(0) == 1023
    assert b.free_area == [0] * 10 + [1]


def test_every_block_is_aligned_to_its_order():
    """A buddy block of order o starts at a multiple of 2^o (the buddy arithmetic depends on it)."""
    b = BuddyAllocator(start_pfn=5, nr_pages=3000)
    for order in (0, 3, 1, 7, 2, 10, 0, 5):
        pfn = b.alloc_pages(order)
        assert pfn is not None and pfn % (1 << order) == 0


def test_alloc_returns_none_when_no_block_is_large_enough():
    """Allocation failure is not an error in the page allocator: NULL goes back to
    the caller, which reclaims.  [1, 4) has an order-0 and an order-1 block only."""
    b = BuddyAllocator(start_pfn=1, nr_pages=3)
    assert b.alloc_pages(2) is None
    assert b.nr_free_pages == 3
    assert b.alloc_pages(1) == 2
    assert b.alloc_pages(0) == 1
    assert b.alloc_pages(0) is None


def test_order_above_max_order_is_a_bug():
    """Linux refuses order > MAX_PAGE_ORDER (WARN and NULL); here it is a ValueError, never a reclaim loop."""
    b = BuddyAllocator(start_pfn=0, nr_pages=4096)
    with pytest.raises(ValueError, match="order must be 0..10"):
        b.alloc_pages(11)


# --- free: __free_one_page() ------------------------------------------------------------


def test_buddy_is_pfn_xor_block_size():
    """mm/internal.h __find_buddy_pfn(): the buddy of pfn p at order o is p ^ (1 << o).

    In an 8-page zone handed out page by page, freeing 5 then 4 merges them into the
    order-1 block at 4 (5 ^ 1 == 4); freeing 6 and 7 builds the order-1 block at 6,
    whose order-1 buddy is 6 ^ 2 == 4, so the two merge into the order-2 block at 4.
    """
    b = BuddyAllocator(start_pfn=0, nr_pages=8)
    assert [b.alloc_pages(0) for _ in range(8)] == list(range(8))
    b.free_pages(5)
    assert b.free_area[:3] == [1, 0, 0]
    b.free_pages(4)
    assert b.free_area[:3] == [0, 1, 0]
    b.free_pages(6)
    assert b.free_area[:3] == [1, 1, 0]
    b.free_pages(7)
    assert b.free_area[:3] == [0, 0, 1]
    assert b.is_free(4) and not b.is_free(3)


def test_no_merge_with_a_buddy_of_another_order():
    """page_is_buddy() requires the buddy to be free *at the same order*: a free
    order-0 page 1 does not merge with a free order-1 block at 2."""
    b = BuddyAllocator(start_pfn=0, nr_pages=4)
    assert b.alloc_pages(0) == 0
    assert b.free_area[:3] == [1, 1, 0]  # page 1 at order 0, [2, 4) at order 1
    b.free_pages(0)
    assert b.free_area[:3] == [0, 0, 1]


def test_no_merge_across_the_zone_edge():
    """A buddy outside the zone is never free: pfn 1's buddy 0 lies outside [1, 4)."""
    b = BuddyAllocator(start_pfn=1, nr_pages=3)
    assert b.alloc_pages(0) == 1
    b.free_pages(1)
    assert b.free_area[:2] == [1, 1]


BAD_FREES = [
    ("outside the zone", lambda b, p: (p + 100, 0), "outside zone Normal"),
    ("below the zone", lambda b, p: (3, 0), "outside zone Normal"),
    ("wrong order", lambda b, p: (p, 0), "allocated with order 2"),
    ("order out of range", lambda b, p: (p, 11), "order must be 0..10"),
    ("misaligned", lambda b, p: (p + 1, 1), "not aligned"),
    ("interior page", lambda b, p: (p + 1, 0), "not the first page of an allocated block"),
    ("a free page", lambda b, p: (p + 8, 0), "double free"),
]


@pytest.mark.parametrize("what, args, message", BAD_FREES, ids=[c[0] for c in BAD_FREES])
def test_bad_free_raises_and_changes_nothing(what, args, message):
    """Linux's bad_page()/VM_BUG_ON paths for frees: a free must be exactly a block the
    allocator handed out.  Here each bad free names the rule and leaves the zone as it was."""
    b = BuddyAllocator(start_pfn=16, nr_pages=32)
    p = b.alloc_pages(2)
    before = snapshot(b)
    pfn, order = args(b, p)
    with pytest.raises(BadFree, match=message) as info:
        b.free_pages(pfn, order)
    assert f"pfn={pfn:#x}" in str(info.value) and f"order={order}" in str(info.value)
    assert snapshot(b) == before
    b.free_pages(p, 2)  # the allocator still works
    assert b.free_area == BuddyAllocator(start_pfn=16, nr_pages=32).free_area


def test_double_free_is_refused():
    """Freeing a block twice (a double free) is caught, after it has merged with its buddy too."""
    b = BuddyAllocator(start_pfn=0, nr_pages=2)
    p = b.alloc_pages(0)
    b.free_pages(p)
    before = snapshot(b)
    with pytest.raises(BadFree, match="double free"):
        b.free_pages(p)
    assert snapshot(b) == before


def test_bad_free_is_not_a_user_error():
    """A bad free is a kernel bug: it must keep its traceback, not be printed as bad input."""
    from model.errors import UserError

    assert not issubclass(BadFree, UserError)


# --- watermarks -----------------------------------------------------------------------------


def test_min_free_kbytes_matches_the_kernel_table():
    """mm/page_alloc.c: min_free_kbytes = int_sqrt(lowmem_kbytes * 16), whose comment
    lists 16MB: 512k, 64MB: 1024k, 1024MB: 4096k, 16384MB: 16384k."""
    mib = 256  # pages per MiB
    assert calculate_min_free_kbytes(16 * mib) == 512
    assert calculate_min_free_kbytes(64 * mib) == 1024
    assert calculate_min_free_kbytes(1024 * mib) == 4096
    assert calculate_min_free_kbytes(16384 * mib) == 16384


def test_min_free_kbytes_is_clamped():
    """calculate_min_free_kbytes() clamps to [128, 262144]: 512 KiB of memory gives
    int_sqrt(512 * 16) = 90, raised to 128; 8 TiB gives int_sqrt(2^33 * 16) = 2^18.5 > 262144."""
    assert calculate_min_free_kbytes(128) == 128
    assert calculate_min_free_kbytes(1 << 31) == 262144


def test_watermarks_of_a_64_mib_zone():
    """__setup_per_zone_wmarks() for 16384 pages, worked by hand:
    min_free_kbytes = int_sqrt(65536 * 16) = 1024; min = 1024 >> 2 = 256 pages;
    delta = max(256 >> 2, 16384 * 10 // 10000) = max(64, 16) = 64;
    low = 256 + 64 = 320; high = 320 + 64 = 384."""
    b = BuddyAllocator(start_pfn=0, nr_pages=16384)
    assert b.min_free_kbytes == 1024
    assert b.watermarks == Watermarks(min=256, low=320, high=384)


def test_watermarks_of_a_1_gib_zone_use_the_scale_factor():
    """262144 pages: min_free_kbytes = 4096, min = 1024 pages; delta = max(1024 >> 2,
    262144 * 10 // 10000) = max(256, 262) = 262 (watermark_scale_factor wins);
    low = 1286; high = 1548."""
    assert setup_per_zone_wmarks(262144, 4096) == Watermarks(min=1024, low=1286, high=1548)


def test_explicit_min_free_kbytes_and_scale_factor():
    """Writing vm.min_free_kbytes = 2048 on 16384 pages: min = 512, delta = max(128, 16) = 128,
    low 640, high 768.  With watermark_scale_factor = 1000 delta = 16384 * 1000 // 10000 = 1638."""
    assert BuddyAllocator(0, 16384, min_free_kbytes=2048).watermarks == Watermarks(512, 640, 768)
    b = BuddyAllocator(0, 16384, min_free_kbytes=2048, watermark_scale_factor=1000)
    assert b.watermarks == Watermarks(512, 512 + 1638, 512 + 2 * 1638)


@pytest.mark.parametrize("kwargs, field", [
    ({"start_pfn": -1, "nr_pages": 8}, "start_pfn=-1"),
    ({"start_pfn": 0, "nr_pages": 0}, "nr_pages=0"),
    ({"start_pfn": 0, "nr_pages": 8, "min_free_kbytes": -5}, "min_free_kbytes=-5"),
    ({"start_pfn": 0, "nr_pages": 8, "watermark_scale_factor": 3001}, "watermark_scale_factor=3001"),
])
def test_impossible_zone_is_refused(kwargs, field):
    """An impossible zone is a configuration error naming the field (sysctl ranges:
    watermark_scale_factor 1..3000, min_free_kbytes >= 0)."""
    with pytest.raises(ConfigError, match=field):
        BuddyAllocator(**kwargs)


def test_zone_watermark_ok():
    """__zone_watermark_ok(): free pages minus the (1 << order) - 1 extra pages of the
    request must be strictly above the mark; for order > 0 a free block of at least
    that order must also exist."""
    b = BuddyAllocator(start_pfn=0, nr_pages=1024)
    assert b.zone_watermark_ok(0, 1023)
    assert not b.zone_watermark_ok(0, 1024)
    assert b.zone_watermark_ok(3, 1016)  # 1024 - 7 = 1017 > 1016
    assert not b.zone_watermark_ok(3, 1017)
    pages = [b.alloc_pages(0) for _ in range(1024)]
    for p in pages[::2]:
        b.free_pages(p)  # 512 free pages, none of them with a free buddy
    assert b.free_area[0] == 512 and b.nr_free_pages == 512
    assert b.zone_watermark_ok(0, 100)
    assert not b.zone_watermark_ok(1, 100)  # enough pages, but no order-1 block


# --- /proc/buddyinfo -------------------------------------------------------------------------


def test_buddyinfo_line_for_a_1024_512_1_zone():
    """mm/vmstat.c frag_show_print(): "Node %d, zone %8s " then "%6lu " per order 0..10,
    then "\\n".  A zone of 1024 + 512 + 1 pages from pfn 0 is one order-10, one order-9
    and one order-0 block."""
    b = BuddyAllocator(start_pfn=0, nr_pages=1024 + 512 + 1)
    counts = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    expected = "Node 0, zone   Normal " + "".join(f"{c:6d} " for c in counts) + "\n"
    assert b.buddyinfo() == expected
    assert b.buddyinfo() == (
        "Node 0, zone   Normal      1      0      0      0      0      0      0      0      0      1      1 \n"
    )


def test_buddyinfo_after_an_order_0_allocation():
    """In the same zone an order-0 request takes the lone order-0 block (pfn 1536)
    rather than splitting a larger one, so only the order-0 count drops."""
    b = BuddyAllocator(start_pfn=0, nr_pages=1024 + 512 + 1)
    assert b.alloc_pages(0) == 1536
    assert b.buddyinfo() == "Node 0, zone   Normal " + "     0 " * 9 + "     1      1 \n"


# --- properties ----------------------------------------------------------------------------------


zones = st.tuples(st.integers(0, 2100), st.integers(1, 3000))


@settings(max_examples=150, deadline=None)
@given(zone=zones, data=st.data())
def test_buddy_properties(zone, data):
    """Under any sequence of allocations and frees: blocks never overlap, each is aligned
    to its order and inside the zone, free + allocated pages is the zone size, and
    freeing everything in any order coalesces back to the fresh zone's free_area."""
    start, n = zone
    b = BuddyAllocator(start, n)
    fresh = b.free_area
    owned: dict[int, int] = {}
    pages: set[int] = set()
    for _ in range(data.draw(st.integers(0, 120), label="steps")):
        if owned and data.draw(st.booleans(), label="free?"):
            pfn = data.draw(st.sampled_from(sorted(owned)), label="free pfn")
            order = owned.pop(pfn)
            b.free_pages(pfn, order)
            pages.difference_update(range(pfn, pfn + (1 << order)))
        else:
            order = data.draw(st.integers(0, MAX_ORDER), label="order")
            pfn = b.alloc_pages(order)
            if pfn is None:
                assert not any(b.free_area[order:])
                continue
            block = set(range(pfn, pfn + (1 << order)))
            assert pfn % (1 << order) == 0
            assert start <= pfn and pfn + (1 << order) <= start + n
            assert not block & pages
            owned[pfn] = order
            pages |= block
        assert b.nr_free_pages + len(pages) == n
        assert sum(c << o for o, c in enumerate(b.free_area)) == b.nr_free_pages
    for pfn in range(start, start + n):
        assert b.is_free(pfn) == (pfn not in pages)
    for pfn in data.draw(st.permutations(sorted(owned)), label="free order"):
        b.free_pages(pfn, owned[pfn])
    assert b.free_area == fresh
    assert b.nr_free_pages == n
