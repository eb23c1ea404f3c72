"""Page tables built like Linux builds them, in simulated physical memory, from the buddy allocator."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.errors import UserError
from model.mm.page_alloc import BuddyAllocator
from model.x86 import pte
from model.x86.pgtable import OutOfMemory, PageTables
from model.x86.physmem import PhysMem
from model.x86.pte import Level, PageSize

K4, M2, G1 = PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G
# The zone of page-table pages starts at 16 MiB, so data pages below it never collide with tables.
ZONE_START = 4096


def make(mem_size=64 << 20, zone_pages=1024, maxphyaddr=40):
    mem = PhysMem(mem_size)
    buddy = BuddyAllocator(ZONE_START, zone_pages)
    return mem, buddy, PageTables(mem, buddy, maxphyaddr)


def test_pml4_is_a_zeroed_page_from_the_allocator():
    mem, buddy, pt = make()
    assert pt.pml4 % 4096 == 0
    assert not buddy.is_free(pt.pml4 >> 12)
    assert mem.read_frame(pt.pml4 >> 12) == bytes(4096)
    assert pt.table_pages == 1


@pytest.mark.parametrize("size,tables", [(K4, 4), (M2, 3), (G1, 2)])
def test_a_mapping_needs_one_table_per_level_above_its_leaf(size, tables):
    """SDM 4.5: a 4 KiB page uses PML4, PDPT, PD and PT; a 2 MiB page stops at the PD, 1 GiB at the PDPT."""
    mem, buddy, pt = make()
    free_before = buddy.nr_free_pages
    pt.map(0x40000000, 0x40000000, size)
    assert pt.table_pages == tables
    assert buddy.nr_free_pages == free_before - (tables - 1)


def test_non_leaf_entries_are_linux_page_table_entries():
    """Linux pgtable_types.h: _PAGE_TABLE = __PP|__RW|_USR|___A|___D; the leaf alone restricts access."""
    mem, buddy, pt = make()
    va = 0x7F12_3456_7000
    pt.map(va, 0x5000, writable=False, user=False, nx=True)
    for level in (Level.PML4, Level.PDPT, Level.PD):
        value = pt.get_entry(va, level)
        assert value & 0xFFF == pte.P | pte.RW | pte.US | pte.A | pte.D
        assert not value & pte.XD
        next_table = value & pte.addr_mask(40)
        assert next_table >> 12 >= ZONE_START  # a page from the allocator


@pytest.mark.parametrize("size", list(PageSize))
@pytest.mark.parametrize("flags", [
    dict(), dict(writable=False), dict(user=False), dict(nx=True), dict(global_=True), dict(accessed=True),
    dict(dirty=True), dict(pcd=True), dict(pwt=True),
    dict(writable=False, user=False, nx=True, global_=True, accessed=True, dirty=True, pcd=True, pwt=True),
])
def test_map_writes_the_leaf_fields_at_their_sdm_bits(size, flags):
    """SDM tables 4-16, 4-18, 4-19: leaf flags at bits 0-8 and 63; PS=1 marks a 1 GiB PDPTE or 2 MiB PDE."""
    mem, buddy, pt = make()
    va, pa = 3 << 30, 1 << 30
    addr = pt.map(va, pa, size, **flags)
    value = mem.read64(addr)
    want = dict(writable=True, user=True, nx=False, global_=False, accessed=False, dirty=False, pcd=False,
                pwt=False) | flags
    decoded = pte.PTE.decode(value)
    assert decoded.present and decoded.addr == pa
    assert decoded.ps == (size != K4)
    for name in want:
        assert getattr(decoded, name if name != "nx" else "xd") == want[name], name
    leaf = pt.lookup(va + 0x123)
    assert (leaf.va, leaf.pa, leaf.size, leaf.level, leaf.entry_addr, leaf.value) == \
        (va, pa, size, size.leaf_level, addr, value)
    assert (leaf.writable, leaf.user, leaf.nx, leaf.global_, leaf.accessed, leaf.dirty) == \
        tuple(want[k] for k in ("writable", "user", "nx", "global_", "accessed", "dirty"))


@pytest.mark.parametrize("size,va,pa", [
    (K4, 0x1001, 0x2000), (K4, 0x1000, 0x2800), (M2, 0x1000, 0), (M2, 0x200000, 0x1000),
    (G1, 0x200000, 0), (G1, 1 << 30, 0x200000),
])
def test_map_refuses_addresses_not_aligned_to_the_page_size(size, va, pa):
    """SDM 4.5: a page of 2^n bytes is aligned to 2^n in both the linear and the physical address space."""
    with pytest.raises(UserError, match="aligned"):
        make()[2].map(va, pa, size)


@pytest.mark.parametrize("va", [0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_F000, 1 << 64, -4096])
def test_map_refuses_non_canonical_addresses(va):
    """SDM 3.3.7.1: only canonical addresses (bits 63:47 equal) can be translated."""
    with pytest.raises(UserError, match="canonical"):
        make()[2].map(va, 0x1000)


def test_map_refuses_a_page_beyond_maxphyaddr():
    """SDM 4.1.4: physical addresses have MAXPHYADDR bits; a page above 2**M is unreachable."""
    pt = make(maxphyaddr=36)[2]
    pt.map(0, (1 << 36) - 4096)
    with pytest.raises(UserError, match="MAXPHYADDR"):
        pt.map(0x1000, 1 << 36)
    pt.map(1 << 30, (1 << 36) - (1 << 30), G1)
    with pytest.raises(UserError, match="MAXPHYADDR"):
        pt.map(2 << 30, 1 << 36, G1)


@pytest.mark.parametrize("first,second", [(M2, K4), (G1, K4), (G1, M2), (K4, M2), (K4, G1), (M2, G1)])
def test_map_refuses_to_overlap_a_mapping_of_another_size(first, second):
    pt = make()[2]
    pt.map(1 << 30, 1 << 30, first)
    with pytest.raises(UserError, match="already|smaller pages"):
        pt.map(1 << 30, 1 << 30, second)
    assert pt.lookup(1 << 30).size == first


def test_map_replaces_a_mapping_of_the_same_size():
    """Linux COW: the fault handler replaces a read-only PTE by a writable one to a new page."""
    pt = make()[2]
    pt.map(0x1000, 0x5000, writable=False)
    pt.map(0x1000, 0x6000)
    leaf = pt.lookup(0x1000)
    assert leaf.pa == 0x6000 and leaf.writable
    assert pt.table_pages == 4


def test_upper_half_mappings_use_pml4_slots_256_to_511():
    """SDM figure 4-8: bits 47:39 index the PML4; the kernel half 0xFFFF8000_00000000 starts at slot 256."""
    mem, buddy, pt = make()
    va = 0xFFFF_8000_0000_0000
    pt.map(va, 0x1000)
    assert pt.entry_addr(va, Level.PML4) == pt.pml4 + 256 * 8
    assert pt.get_entry(va, Level.PML4) & pte.P
    assert [leaf.va for leaf in pt.leaves()] == [va]


def test_unmap_returns_the_old_leaf_and_keeps_the_tables():
    """Linux munmap zaps the PTEs; page-table pages are freed later by free_pgtables."""
    mem, buddy, pt = make()
    pt.map(0x1000, 0x5000, dirty=True)
    old = pt.lookup(0x1000).value
    assert pt.unmap(0x1000) == old
    assert pt.lookup(0x1000) is None
    assert pt.unmap(0x1000) is None
    assert pt.table_pages == 4


@pytest.mark.parametrize("size", [M2, G1])
def test_unmap_clears_a_huge_leaf(size):
    pt = make()[2]
    pt.map(1 << 30, 1 << 30, size)
    assert pt.unmap((1 << 30) + size.bytes - 8) & pte.PS
    assert pt.lookup(1 << 30) is None
    pt.map(1 << 30, 0x1000)  # the slot is free for smaller pages now


def test_unmap_of_nothing_is_none():
    pt = make()[2]
    assert pt.unmap(0x1234000) is None


def test_free_empty_tables_frees_bottom_up_and_keeps_the_pml4():
    mem, buddy, pt = make()
    free_before = buddy.nr_free_pages
    pt.map(0x1000, 0x5000)
    pt.map(0x7F00_0000_0000, 0x6000)
    pt.unmap(0x1000)
    assert pt.free_empty_tables() == 3  # PT, PD, PDPT of the first mapping
    assert pt.get_entry(0x1000, Level.PML4) == 0
    assert pt.lookup(0x7F00_0000_0000).pa == 0x6000
    pt.unmap(0x7F00_0000_0000)
    assert pt.free_empty_tables() == 3
    assert pt.table_pages == 1
    assert buddy.nr_free_pages == free_before


def test_free_empty_tables_keeps_a_table_holding_a_swap_entry():
    """A non-present PTE holding a swap entry is not pte_none: its table stays."""
    pt = make()[2]
    pt.set_pte(0x1000, 0xABC << 12)
    assert pt.free_empty_tables() == 0
    assert pt.get_pte(0x1000) == 0xABC << 12


@pytest.mark.parametrize("size", list(PageSize))
def test_protect_changes_rw_us_xd_and_keeps_a_d_g(size):
    """Linux pte_modify (mprotect) replaces the protection bits and keeps _PAGE_CHG_MASK (A, D, frame)."""
    mem, buddy, pt = make()
    va = 1 << 30
    pt.map(va, 1 << 30, size, accessed=True, dirty=True, global_=True)
    old = pt.lookup(va).value
    assert pt.protect(va, writable=False, user=False, nx=True) == old
    leaf = pt.lookup(va)
    assert (leaf.writable, leaf.user, leaf.nx, leaf.accessed, leaf.dirty, leaf.global_, leaf.pa, leaf.size) == \
        (False, False, True, True, True, True, 1 << 30, size)
    assert pt.protect(va + (1 << 31), writable=True, user=True, nx=False) is None


def test_test_and_clear_young_reports_and_clears_accessed():
    """Linux ptep_test_and_clear_young: returns the old A bit and clears it; other bits unchanged."""
    mem, buddy, pt = make()
    pt.map(0x1000, 0x5000, accessed=True, dirty=True)
    before = pt.lookup(0x1000).value
    assert pt.test_and_clear_young(0x1000) is True
    assert pt.lookup(0x1000).value == before & ~pte.A
    assert pt.test_and_clear_young(0x1000) is False
    assert pt.test_and_clear_young(0x2000) is False


def test_leaves_lists_present_mappings_in_address_order():
    pt = make()[2]
    pt.map(0xFFFF_FFFF_C000_0000, 0, G1, global_=True)
    pt.map(0x20_0000, 0x40_0000, M2, nx=True)
    pt.map(0x1000, 0x5000, writable=False)
    pt.set_pte(0x2000, 0x77 << 12)  # swap entry: not present, not listed
    got = [(l.va, l.pa, l.size, l.writable, l.nx, l.global_) for l in pt.leaves()]
    assert got == [(0x1000, 0x5000, K4, False, False, False), (0x20_0000, 0x40_0000, M2, True, True, False),
                   (0xFFFF_FFFF_C000_0000, 0, G1, True, False, True)]


def test_set_pte_stores_a_swap_entry_in_a_non_present_pte():
    """Linux stores swap entries in PTEs with _PAGE_PRESENT clear; the MMU sees a not-present page."""
    mem, buddy, pt = make()
    swp = (0x1234 << 12) | (1 << 9)
    addr = pt.set_pte(0x40_1000, swp)
    assert mem.read64(addr) == swp
    assert pt.get_pte(0x40_1000) == swp
    assert pt.lookup(0x40_1000) is None
    assert pt.unmap(0x40_1000) == swp
    assert pt.get_pte(0x40_1000) == 0


def test_set_entry_writes_any_raw_value_at_any_level():
    mem, buddy, pt = make()
    pt.map(0x1000, 0x5000)
    pdpte = pt.get_entry(0x1000, Level.PDPT)
    addr = pt.set_entry(0x1000, Level.PDPT, pdpte & ~pte.US)
    assert addr == pt.entry_addr(0x1000, Level.PDPT)
    assert mem.read64(addr) == pdpte & ~pte.US
    assert pt.lookup(0x1000).pa == 0x5000  # software follows the odd entry
    pt.set_entry(0x1000, Level.PML4, pt.get_entry(0x1000, Level.PML4) | pte.PS)
    assert pt.lookup(0x1000).pa == 0x5000  # PS in a PML4E is never a page size
    with pytest.raises(UserError, match="64-bit"):
        pt.set_entry(0x1000, Level.PT, 1 << 64)


def test_entry_addr_is_table_base_plus_8_times_index():
    """SDM 4.5: each entry is 8 bytes; the table is indexed by 9 address bits per level."""
    pt = make()[2]
    va = (3 << 39) | (5 << 30) | (7 << 21) | (9 << 12)
    assert pt.entry_addr(va, Level.PT) is None
    pt.map(va, 0x5000)
    assert pt.entry_addr(va, Level.PML4) == pt.pml4 + 3 * 8
    assert pt.entry_addr(va, Level.PDPT) == (pt.get_entry(va, Level.PML4) & pte.addr_mask(40)) + 5 * 8
    assert pt.entry_addr(va, Level.PD) == (pt.get_entry(va, Level.PDPT) & pte.addr_mask(40)) + 7 * 8
    assert pt.entry_addr(va, Level.PT) == (pt.get_entry(va, Level.PD) & pte.addr_mask(40)) + 9 * 8


def test_entry_below_a_huge_page_does_not_exist():
    pt = make()[2]
    pt.map(0x20_0000, 0x20_0000, M2)
    assert pt.entry_addr(0x20_1000, Level.PT) is None
    assert pt.get_pte(0x20_1000) == 0
    with pytest.raises(UserError, match="2M page"):
        pt.set_pte(0x20_1000, 0)


def test_destroy_gives_every_table_page_back():
    mem, buddy, pt = make()
    free_before = buddy.nr_free_pages + 1  # the PML4 is already allocated
    for i in range(64):
        pt.map(i << 30 | i << 21 | i << 12, 0x1000)
    assert pt.table_pages > 64
    pt.destroy()
    assert pt.table_pages == 0
    assert buddy.nr_free_pages == free_before


def test_out_of_memory_is_raised_when_the_allocator_is_empty():
    """The allocator returns None (no block); page-table allocation then fails like pte_alloc -> -ENOMEM."""
    mem = PhysMem(64 << 20)
    pt = PageTables(mem, BuddyAllocator(ZONE_START, 3))  # PML4 + 2 more pages
    with pytest.raises(OutOfMemory):
        pt.map(0x1000, 0x5000)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(list(PageSize)), st.integers(0, 7), st.integers(0, 3),
                          st.integers(0, 511)), max_size=40))
def test_map_and_unmap_agree_with_a_dictionary_of_mappings(ops):
    """Property: after any sequence of map/unmap (tables freed like munmap's free_pgtables), lookup and
    leaves answer what was mapped last, and a mapping of another size in the way is refused."""
    mem, buddy, pt = make(zone_pages=4096)
    model: dict[int, tuple[int, PageSize]] = {}  # page base va -> (pa, size)

    def covering(va):
        return [(base, v) for base, v in model.items() if base <= va < base + v[1].bytes]

    for do_map, size, g, m, p in ops:
        va = (g << 30) + (m << 21 if size != G1 else 0) + (p << 12 if size == K4 else 0)
        pa = ((p + 1) << size.shift) % (1 << 40)
        if do_map:
            clash = [b for b, (_, s) in model.items() if s != size and b < va + size.bytes and va < b + s.bytes]
            if clash:
                with pytest.raises(UserError):
                    pt.map(va, pa, size)
                continue
            pt.map(va, pa, size)
            model[va] = (pa, size)
        else:
            old = pt.unmap(va)
            hit = covering(va)
            assert (old is not None) == bool(hit)
            for base, _ in hit:
                del model[base]
            pt.free_empty_tables()
    for base, (pa, size) in model.items():
        leaf = pt.lookup(base + size.bytes - 1)
        assert (leaf.va, leaf.pa, leaf.size) == (base, pa, size)
    assert sorted((l.va, l.pa, l.size) for l in pt.leaves()) == sorted((b, pa, s) for b, (pa, s) in model.items())
