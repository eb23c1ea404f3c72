"""The reference TLB against facts worked by hand from docs/reference.md."""

from types import SimpleNamespace

import pytest

from model.config import Policy, TLBConfig
from model.reference.ref_replacement import lfsr_step
from model.reference.ref_tlb import TLB
from model.x86.pte import PageSize

K4, M2, G1 = PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G


def leaf(size=K4, frame=0x1000, global_=False, writable=True, user=True, nx=False, dirty=True):
    """What a successful walk hands the TLB."""
    return SimpleNamespace(size=size, frame=frame, global_=global_, writable=writable, user=user, nx=nx, dirty=dirty)


def page(vpn):
    return vpn << 12


def fill4(tlb, vpns, pcid=0):
    return [tlb.fill(page(v), pcid, leaf(frame=page(v + 0x100))) for v in vpns]


def single_set(policy, ways=4, seed=0xACE1):
    """A fully associative main array: one set of ``ways`` ways."""
    return TLB(TLBConfig(entries=ways, ways=ways, policy=policy, superpage_entries=2), seed)


def test_set_index_is_low_vpn_bits():
    tlb = TLB(TLBConfig(entries=8, ways=2, policy=Policy.LRU), 1)  # 4 sets
    a, b = fill4(tlb, [5, 9])  # 5 = 0b0101, 9 = 0b1001: both set 1
    assert (a.set_index, a.way) == (1, 0) and (b.set_index, b.way) == (1, 1)
    c, = fill4(tlb, [2])
    assert (c.set_index, c.way) == (2, 0)
    fill4(tlb, [13])  # set 1 again: evicts the LRU way, VPN 5
    assert tlb.lookup(page(5), 0) is None
    assert tlb.lookup(page(9), 0) is not None and tlb.lookup(page(2), 0) is not None


@pytest.mark.parametrize("policy", list(Policy))
def test_lowest_invalid_way_first(policy):
    tlb = single_set(policy)
    entries = fill4(tlb, [1, 2, 3, 4])
    assert [e.way for e in entries] == [0, 1, 2, 3]
    tlb.invalidate(entries[2])
    tlb.invalidate(entries[1])
    assert tlb.victim(0) == 1
    assert fill4(tlb, [5])[0].way == 1
    assert fill4(tlb, [6])[0].way == 2


def test_lru_evicts_least_recently_used():
    tlb = single_set(Policy.LRU)
    a, b, c, d = fill4(tlb, [0xA, 0xB, 0xC, 0xD])
    tlb.touch(a)
    assert tlb.victim(0) == b.way
    fill4(tlb, [0xE])
    assert tlb.lookup(page(0xB), 0) is None
    assert all(tlb.lookup(page(v), 0) for v in (0xA, 0xC, 0xD, 0xE))


def test_lookup_alone_does_not_touch():
    tlb = single_set(Policy.LRU)
    fill4(tlb, [0xA, 0xB, 0xC, 0xD])
    assert tlb.lookup(page(0xA), 0) is not None
    fill4(tlb, [0xE])
    assert tlb.lookup(page(0xA), 0) is None


def test_plru_follows_tree_bits():
    tlb = single_set(Policy.PLRU)
    bits = tlb.main.policy.node_bits
    fill4(tlb, [0xA, 0xB, 0xC, 0xD])
    # B (leaf 5, right child of node 2) left node 2 = 0; D (leaf 7, right child of node 3,
    # which is the right child of node 1) left nodes 3 and 1 = 0.
    assert bits(0) == {1: 0, 2: 0, 3: 0}
    assert tlb.victim(0) == 0  # root 0 -> node 2, 0 -> leaf 4 = way 0
    e, = fill4(tlb, [0xE])
    assert e.way == 0 and bits(0) == {1: 1, 2: 1, 3: 0}
    f, = fill4(tlb, [0xF])  # root 1 -> node 3, 0 -> leaf 6 = way 2 (C)
    assert f.way == 2 and bits(0) == {1: 0, 2: 1, 3: 1}
    tlb.touch(tlb.lookup(page(0xB), 0))  # way 1: node 2 -> 0, node 1 -> 1
    assert bits(0) == {1: 1, 2: 0, 3: 1}
    g, = fill4(tlb, [0x10])  # root 1 -> node 3, 1 -> leaf 7 = way 3 (D)
    assert g.way == 3
    assert tlb.lookup(page(0xD), 0) is None and tlb.lookup(page(0xC), 0) is None


def test_plru_eight_ways_victim_walks_three_levels():
    tlb = single_set(Policy.PLRU, ways=8)
    fill4(tlb, range(8))
    # Touching 0, 2, 4, 6 in order sets nodes 4..7 to 1 (each pair's odd way is LRU); 2 then
    # left node 2 = 0 (ways 0-1 LRU) and 6 left nodes 3 and 1 = 0.
    for v in (0, 2, 4, 6):
        tlb.touch(tlb.lookup(page(v), 0))
    assert tlb.main.policy.node_bits(0) == {1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1, 7: 1}
    assert tlb.victim(0) == 1  # root 0 -> node 2; 0 -> node 4; 1 -> leaf 9 = way 1


def test_fifo_pointer_moves_only_on_valid_replacement():
    tlb = single_set(Policy.FIFO)
    a, b, c, d = fill4(tlb, [0xA, 0xB, 0xC, 0xD])
    tlb.touch(a)  # hits change nothing
    assert fill4(tlb, [0xE])[0].way == 0
    assert fill4(tlb, [0xF])[0].way == 1  # pointer now 2
    tlb.invalidate(d)
    assert fill4(tlb, [0x10])[0].way == 3  # invalid way: pointer stays at 2
    assert fill4(tlb, [0x11])[0].way == 2
    assert fill4(tlb, [0x12])[0].way == 3
    assert fill4(tlb, [0x13])[0].way == 0


def textbook_galois(state):
    """x^16 + x^14 + x^13 + x^11 + 1 in Galois form: the feedback bit enters at exponent e as bit e-1."""
    taps = sum(1 << (e - 1) for e in (16, 14, 13, 11))
    out = state & 1
    state >>= 1
    if out:
        state ^= taps
    return state


def test_lfsr_is_the_textbook_maximal_sequence():
    assert lfsr_step(0xACE1) == textbook_galois(0xACE1) == 0xE270
    s, period = 0xACE1, 0
    while True:
        s, period = lfsr_step(s), period + 1
        if s == 0xACE1:
            break
    assert period == 0xFFFF


def test_random_steps_only_on_valid_victims():
    seed = 0x1234
    tlb = single_set(Policy.RANDOM, seed=seed)
    fill4(tlb, [1, 2, 3, 4])  # invalid-way fills: no step
    expect, s = [], seed
    for _ in range(6):
        s = textbook_galois(s)
        expect.append(s % 4)
    got = []
    for vpn in (10, 11, 12):
        assert tlb.victim(0) == expect[len(got)]
        got.append(fill4(tlb, [vpn])[0].way)
    hole = tlb.lookup(page(12), 0)
    tlb.invalidate(hole)
    assert fill4(tlb, [20])[0].way == hole.way  # an invalid-way fill does not step
    for vpn in (30, 31, 32):
        got.append(fill4(tlb, [vpn])[0].way)
    assert got == expect


def test_random_has_one_lfsr_per_array():
    seed = 0xACE1
    tlb = TLB(TLBConfig(entries=4, ways=4, policy=Policy.RANDOM, superpage_entries=2), seed)
    fill4(tlb, [1, 2, 3, 4])
    for i in range(2):
        tlb.fill(i << 21, 0, leaf(size=M2, frame=i << 21))
    s1 = textbook_galois(seed)
    e = tlb.fill(5 << 21, 0, leaf(size=M2, frame=5 << 21))  # steps the superpage LFSR only
    assert e.way == s1 % 2
    assert fill4(tlb, [5])[0].way == s1 % 4  # the main array's LFSR has not moved


def test_superpages_are_never_indexed_by_4k_bits():
    # Direct-mapped main array of 8 sets: 0x200000 and 0x400000 have VPNs 0x200 and 0x400,
    # both set 0; in the fully associative superpage array they coexist.
    tlb = TLB(TLBConfig(entries=8, ways=1, policy=Policy.LRU, superpage_entries=2), 1)
    tlb.fill(0x200000, 0, leaf(size=M2, frame=0x4000_0000))
    tlb.fill(0x400000, 0, leaf(size=M2, frame=0x6000_0000))
    fill4(tlb, [0x800])  # a 4 KiB page in main set 0 too
    assert tlb.lookup(0x2ABCDE, 0).frame == 0x4000_0000
    assert tlb.lookup(0x5FFFFF, 0).frame == 0x6000_0000
    assert tlb.lookup(page(0x800), 0).size is K4


def test_superpage_tags_cover_their_page_only():
    tlb = single_set(Policy.LRU)
    tlb.fill(0x4020_0000, 0, leaf(size=M2, frame=0x20_0000))
    tlb.fill(0x80_0000_0000, 0, leaf(size=G1, frame=0x4000_0000))
    assert tlb.lookup(0x4020_0000, 0) and tlb.lookup(0x403F_FFFF, 0)
    assert tlb.lookup(0x401F_FFFF, 0) is None and tlb.lookup(0x4040_0000, 0) is None
    assert tlb.lookup(0x80_3FFF_FFFF, 0).size is G1 and tlb.lookup(0x80_4000_0000, 0) is None
    # the tag is vaddr[47:n]: the sign-extension bits take no part
    tlb.fill(0xFFFF_8000_0000_0000, 0, leaf(size=G1, frame=0))
    assert tlb.lookup(0xFFFF_8000_1234_5678, 0).size is G1


def test_pcid_isolation_and_globals():
    tlb = single_set(Policy.LRU)
    tlb.fill(page(7), 1, leaf(frame=0x7000))
    tlb.fill(page(8), 1, leaf(frame=0x8000, global_=True))
    assert tlb.lookup(page(7), 2) is None and tlb.lookup(page(7), 1).frame == 0x7000
    assert tlb.lookup(page(8), 2).frame == 0x8000
    tlb.fill(page(7), 2, leaf(frame=0x9000))  # same VA, other address space: a second entry
    assert tlb.lookup(page(7), 1).frame == 0x7000 and tlb.lookup(page(7), 2).frame == 0x9000
    assert len(tlb.entries()) == 3


def test_fill_replaces_a_matching_entry_in_place():
    tlb = single_set(Policy.LRU)
    a, b = fill4(tlb, [1, 2])
    again = tlb.fill(page(1), 0, leaf(frame=0xF000, dirty=False))
    assert again.way == a.way and not a.valid
    assert tlb.lookup(page(1), 0).frame == 0xF000 and len(tlb.entries()) == 2


def test_flush_all_and_keep_global():
    tlb = single_set(Policy.LRU)
    tlb.fill(page(1), 3, leaf())
    tlb.fill(page(2), 3, leaf(global_=True))
    tlb.fill(0x20_0000, 4, leaf(size=M2, global_=True))
    tlb.flush_all(keep_global=True)
    assert sorted(e.vaddr() for e in tlb.entries()) == [page(2), 0x20_0000]
    tlb.flush_all()
    assert tlb.entries() == []


def test_flush_pcid_spares_globals_and_other_pcids():
    tlb = single_set(Policy.LRU)
    tlb.fill(page(1), 3, leaf())
    tlb.fill(page(2), 3, leaf(global_=True))
    tlb.fill(page(3), 5, leaf())
    tlb.flush_pcid(3)
    assert sorted((e.vaddr(), e.pcid) for e in tlb.entries()) == [(page(2), 3), (page(3), 5)]


def test_flush_va_drops_superpages_and_globals():
    tlb = TLB(TLBConfig(entries=8, ways=2, policy=Policy.LRU, superpage_entries=4), 1)
    tlb.fill(0x4000_0000, 1, leaf(size=G1, frame=0x8000_0000))
    tlb.fill(0x60_0000, 1, leaf(size=M2, frame=0x20_0000, global_=True))
    tlb.fill(0x61_2000, 2, leaf())  # same VA, another PCID: survives
    tlb.fill(0x61_3000, 1, leaf())  # another page of the same 2M region: survives
    tlb.flush_va(0x61_2345, 1)
    assert tlb.lookup(0x61_2345, 1) is None
    assert tlb.lookup(0x61_2345, 2).size is K4 and tlb.lookup(0x61_3000, 1).size is K4
    tlb.flush_va(0x4123_4567, 1)  # deep inside the 1 GiB page
    assert tlb.lookup(0x4000_0000, 1) is None


def test_flush_keeps_replacement_state():
    tlb = single_set(Policy.FIFO)
    fill4(tlb, [1, 2, 3, 4, 5])  # the fifth replaced way 0: pointer at 1
    tlb.flush_all()
    fill4(tlb, [6, 7, 8, 9])  # invalid ways 0..3, pointer untouched
    assert fill4(tlb, [10])[0].way == 1


def test_multiple_matches_prefer_main_array_then_lowest_way():
    tlb = single_set(Policy.LRU)
    tlb.fill(0x20_0000, 2, leaf(size=M2, frame=0x4000_0000, global_=True))
    tlb.fill(0x20_1000, 1, leaf(frame=0x5000))
    assert tlb.lookup(0x20_1000, 1).size is K4
    assert tlb.lookup(0x20_1000, 2).size is M2
    tlb.fill(0, 1, leaf(size=G1, frame=0x8000_0000))  # superpage way 1 also covers 0x20_1000
    assert tlb.lookup(0x20_2000, 1).size is M2  # way 0 (the global 2M) before way 1
