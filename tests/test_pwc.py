"""The reference page-walk cache on its own: deepest match, LRU, PCID tags, size 0."""

from model.reference.ref_pwc import PageWalkCache
from model.x86.pte import RW, US, A, Level, P

VA = 0x0000_7F12_3456_7000  # PML4 index 254, PDPT 72, PD 162
SAME_2M = VA + 0x1000
SAME_1G = VA + (1 << 21)
SAME_512G = VA + (1 << 30)
ELSEWHERE = VA + (1 << 39)


def chain(tag=0x10, writable=True, user=True, nx=False):
    """The non-leaf part of a walk of VA: PML4E, PDPTE, PDE with next tables tag+1, +2, +3."""
    return [(level, (tag + i) << 12, ((tag + i) << 12) | P | RW | US | A, writable, user, nx)
            for i, level in enumerate((Level.PML4, Level.PDPT, Level.PD), start=1)]


def one(level, va_tag):
    """A single cached entry whose next table is ``va_tag`` pages up."""
    return [(level, va_tag << 12, (va_tag << 12) | P | A, True, True, False)]


def test_deepest_match_decides_where_the_walk_starts():
    pwc = PageWalkCache(8)
    pwc.fill(VA, 0, chain())
    assert (pwc.lookup(SAME_2M, 0).level, pwc.lookup(SAME_2M, 0).table) == (Level.PT, 0x13000)
    assert (pwc.lookup(SAME_1G, 0).level, pwc.lookup(SAME_1G, 0).table) == (Level.PD, 0x12000)
    assert (pwc.lookup(SAME_512G, 0).level, pwc.lookup(SAME_512G, 0).table) == (Level.PDPT, 0x11000)
    assert pwc.lookup(ELSEWHERE, 0) is None


def test_start_carries_combined_permissions():
    pwc = PageWalkCache(4)
    pwc.fill(VA, 0, chain(writable=False, user=True, nx=True))
    start = pwc.lookup(VA, 0)
    assert (start.writable, start.user, start.nx) == (False, True, True)


def test_pcid_tagged():
    pwc = PageWalkCache(8)
    pwc.fill(VA, 1, chain())
    assert pwc.lookup(VA, 2) is None
    pwc.fill(VA, 2, chain(tag=0x40))
    assert pwc.lookup(VA, 1).table == 0x13000 and pwc.lookup(VA, 2).table == 0x43000
    pwc.flush_pcid(1)
    assert pwc.lookup(VA, 1) is None and pwc.lookup(VA, 2) is not None
    pwc.flush_all()
    assert pwc.entries() == []


def test_fill_is_top_down_and_lru():
    pwc = PageWalkCache(2)
    pwc.fill(VA, 0, chain())  # PML4E, PDPTE, then the PDE evicts the PML4E (least recently filled)
    assert [e.level for e in pwc.entries()] == [Level.PD, Level.PDPT]
    assert pwc.lookup(SAME_512G, 0) is None


def test_lookup_is_a_use():
    pwc = PageWalkCache(2)
    pwc.fill(0, 0, one(Level.PML4, 1))
    pwc.fill(1 << 39, 0, one(Level.PML4, 2))
    assert pwc.lookup(0, 0) is not None  # the first entry becomes most recently used
    pwc.fill(2 << 39, 0, one(Level.PML4, 3))
    assert pwc.lookup(1 << 39, 0) is None
    assert pwc.lookup(0, 0) is not None and pwc.lookup(2 << 39, 0) is not None


def test_refill_replaces_in_place():
    pwc = PageWalkCache(4)
    pwc.fill(VA, 0, chain())
    pwc.fill(VA, 0, chain(tag=0x20))
    assert len(pwc.entries()) == 3 and pwc.lookup(VA, 0).table == 0x23000


def test_lowest_invalid_slot_first():
    pwc = PageWalkCache(4)
    for region, pcid in enumerate((1, 2, 2, 1)):
        pwc.fill(region << 39, pcid, one(Level.PML4, region + 1))
    pwc.flush_pcid(2)  # frees slots 1 and 2
    pwc.fill(4 << 39, 3, one(Level.PML4, 5))
    assert [e.pcid for e in pwc.entries()] == [1, 3, 1]


def test_zero_entries_is_off():
    pwc = PageWalkCache(0)
    pwc.fill(VA, 0, chain())
    assert pwc.lookup(VA, 0) is None and pwc.entries() == []
