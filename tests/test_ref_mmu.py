"""The reference MMU: TLB, PWC and walker wired as docs/reference.md says."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.config import MMUConfig, Policy, TLBConfig
from model.mm.page_alloc import BuddyAllocator
from model.reference.ref_mmu import RefMMU
from model.reference.ref_walker import ControlRegs, walk
from model.x86.pgtable import PageTables
from model.x86.physmem import PhysMem
from model.x86.pte import PF_P, PF_RSVD, PF_US, PF_WR, RW, US, XD, A, Access, D, FaultKind, Level, PageSize
from model.x86.tlbflush import CR3_NOFLUSH, CtlOp

R, W, X = Access.READ, Access.WRITE, Access.FETCH
K4, M2, G1 = PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G
DATA = 0x1_0000_0000  # data frames live above the page-table pages; the walker never reads them


class Machine:
    """Physical memory, a buddy allocator and any number of address spaces."""

    def __init__(self, cfg=MMUConfig()):
        self.mem = PhysMem(16 << 20)
        self.alloc = BuddyAllocator(1, self.mem.nr_frames - 1)
        self.pt = self.new_space()
        self.mmu = RefMMU(cfg, self.mem, ControlRegs(cr3=self.pt.pml4))

    def new_space(self):
        return PageTables(self.mem, self.alloc)

    def tr(self, va, access=R, user=True, **kw):
        return self.mmu.translate(va, access, user, **kw)


@pytest.fixture
def m():
    return Machine()


def test_non_canonical_is_no_lookup(m):
    r = m.tr(0x0000_8000_0000_0000)
    assert (r.fault, r.error_code, r.paddr, r.size, r.tlb_hit, r.walk) == (FaultKind.NONCANONICAL, 0, 0, K4, False,
                                                                            None)
    c = m.mmu.counters
    assert (c["lookups"], c["walks"], c["mem_reads"], c["faults"]) == (0, 0, 0, 1)


def test_miss_walks_then_hits(m):
    m.pt.map(0x40_0000, DATA)
    first = m.tr(0x40_0123, id=5)
    assert (first.paddr, first.tlb_hit, first.id, len(first.walk.reads)) == (DATA + 0x123, False, 5, 4)
    second = m.tr(0x40_0FF8, id=6)
    assert (second.paddr, second.tlb_hit, second.id, second.walk) == (DATA + 0xFF8, True, 6, None)
    c = m.mmu.counters
    assert (c["lookups"], c["hits"], c["misses"], c["walks"], c["faults"]) == (2, 1, 1, 1, 0)


def test_fetch_uses_the_itlb(m):
    m.pt.map(0x40_0000, DATA)
    m.tr(0x40_0000, R)
    assert not m.tr(0x40_0000, X).tlb_hit
    assert m.tr(0x40_0000, X).tlb_hit
    assert len(m.mmu.itlb.entries()) == len(m.mmu.dtlb.entries()) == 1


def test_write_to_clean_entry_walks_and_sets_dirty(m):
    pte = m.pt.map(0x40_0000, DATA)
    m.tr(0x40_0000, R)
    assert m.mem.read64(pte) & (A | D) == A
    w = m.tr(0x40_0008, W)
    assert not w.tlb_hit and w.walk.writes == [(pte, m.mem.read64(pte))]
    assert m.mem.read64(pte) & D
    assert m.tr(0x40_0010, W).tlb_hit


def test_permission_failure_on_a_match_rewalks(m):
    m.pt.map(0x40_0000, DATA, writable=False)
    m.tr(0x40_0000, R)
    r = m.tr(0x40_0000, W)
    assert (r.fault, r.error_code, r.tlb_hit) == (FaultKind.PAGE, PF_P | PF_WR | PF_US, False)
    assert r.walk is not None and m.mmu.dtlb.entries() == []  # invalidated, and a fault fills nothing


def test_the_walk_not_the_stale_entry_reports_the_fault(m):
    m.pt.map(0x40_0000, DATA, writable=False)
    m.tr(0x40_0000, R)
    m.pt.unmap(0x40_0000)  # no shootdown
    r = m.tr(0x40_0000, W)
    assert (r.fault, r.error_code) == (FaultKind.PAGE, PF_WR | PF_US)  # not present, not a protection fault


def test_stale_entry_serves_until_invlpg(m):
    m.pt.map(0x40_0000, DATA)
    m.tr(0x40_0000)
    m.pt.map(0x40_0000, DATA + 0x5000)  # no shootdown: the TLB still holds the old frame
    assert m.tr(0x40_0000).paddr == DATA
    m.mmu.invlpg(0x40_0000)
    assert m.tr(0x40_0000).paddr == DATA + 0x5000


def test_smap_turned_on_stops_cached_supervisor_access(m):
    m.pt.map(0x40_0000, DATA)
    assert m.tr(0x40_0000, R, user=False).fault is FaultKind.NONE
    m.mmu.set_flags(smap=True)
    r = m.tr(0x40_0000, R, user=False)
    assert (r.fault, r.error_code, r.tlb_hit) == (FaultKind.PAGE, PF_P, False)


def warm(m, *vas):
    for va in vas:
        m.tr(va)


def cached(m, va):
    return m.mmu.dtlb.lookup(va, m.mmu.ctrl.pcid) is not None


def test_globals_survive_cr3_writes_and_flush_by_pcid(m):
    m.pt.map(0x40_0000, DATA, global_=True)
    m.pt.map(0x40_1000, DATA + 0x1000)
    warm(m, 0x40_0000, 0x40_1000)
    m.mmu.write_cr3(m.pt.pml4)
    assert cached(m, 0x40_0000) and not cached(m, 0x40_1000)
    m.mmu.set_flags(pcide=True)
    m.mmu.write_cr3(m.pt.pml4 | 1)
    warm(m, 0x40_1000)
    m.mmu.ctl(CtlOp.FLUSH_PCID, 1)
    assert cached(m, 0x40_0000) and not cached(m, 0x40_1000)
    m.mmu.ctl(CtlOp.FLUSH_ALL, 0)
    assert not cached(m, 0x40_0000)


def test_flush_all_keep_global(m):
    m.pt.map(0x40_0000, DATA, global_=True)
    m.pt.map(0x40_1000, DATA + 0x1000)
    warm(m, 0x40_0000, 0x40_1000)
    m.mmu.ctl(CtlOp.FLUSH_ALL_KEEP_GLOBAL, 0)
    assert cached(m, 0x40_0000) and not cached(m, 0x40_1000) and m.mmu.pwc.entries() == []


@pytest.mark.parametrize("size", [M2, G1])
def test_invlpg_inside_a_superpage_drops_it(m, size):
    va = 0x80_0000_0000
    m.pt.map(va, DATA, size)
    warm(m, va + 0x1234)
    assert cached(m, va)
    m.mmu.invlpg(va + size.bytes - 0x1000)
    assert not cached(m, va)


def test_invlpg_drops_globals_and_spares_other_pcids(m):
    other = m.new_space()
    m.pt.map(0x40_0000, DATA, global_=True)
    m.pt.map(0x40_1000, DATA + 0x1000)
    other.map(0x40_1000, DATA + 0x9000)
    m.mmu.set_flags(pcide=True)
    m.mmu.write_cr3(other.pml4 | 2)
    warm(m, 0x40_1000)
    m.mmu.write_cr3(m.pt.pml4 | 1)
    warm(m, 0x40_0000, 0x40_1000)
    m.mmu.invlpg(0x40_0000)
    m.mmu.invlpg(0x40_1000)
    assert not cached(m, 0x40_0000) and not cached(m, 0x40_1000)
    assert m.mmu.dtlb.lookup(0x40_1000, 2).frame == DATA + 0x9000


def test_cr3_noflush_bit_needs_pcide(m):
    other = m.new_space()
    m.pt.map(0x40_0000, DATA)
    other.map(0x40_0000, DATA + 0x7000)
    m.mmu.set_flags(pcide=True)
    m.mmu.write_cr3(m.pt.pml4 | 1)
    warm(m, 0x40_0000)
    m.mmu.write_cr3(other.pml4 | 2, noflush=True)
    assert m.tr(0x40_0000).paddr == DATA + 0x7000  # PCID isolation: same VA, own translation
    m.mmu.write_cr3(m.pt.pml4 | 1, noflush=True)
    r = m.tr(0x40_0000)
    assert (r.tlb_hit, r.paddr) == (True, DATA)
    m.mmu.write_cr3(other.pml4 | 2)  # no-flush bit clear: PCID 2 loses its entries, PCID 1 keeps them
    assert not m.tr(0x40_0000).tlb_hit
    assert m.mmu.dtlb.lookup(0x40_0000, 1).frame == DATA
    m.mmu.set_flags(pcide=False)
    m.mmu.write_cr3(m.pt.pml4 | CR3_NOFLUSH)  # without PCIDE bit 63 is not honoured, and every PCID goes
    assert m.mmu.ctrl.cr3 == m.pt.pml4 and m.mmu.dtlb.entries() == [] and m.mmu.pwc.entries() == []


def test_flush_during_walk_fills_nothing(m):
    m.pt.map(0x40_0000, DATA)
    r = m.tr(0x40_0000, flushes_during_walk=[(CtlOp.FLUSH_PCID, 7)])
    assert (r.paddr, r.fault) == (DATA, FaultKind.NONE)
    assert m.mem.read64(m.pt.entry_addr(0x40_0000, Level.PT)) & A  # the walk still made its A write
    assert m.mmu.dtlb.entries() == [] and m.mmu.pwc.entries() == []
    again = m.tr(0x40_0000)
    assert not again.tlb_hit and len(again.walk.reads) == 4


def test_flush_during_walk_takes_effect_after_it(m):
    m.pt.map(0x40_0000, DATA)
    m.pt.map(0x40_1000, DATA + 0x1000)
    warm(m, 0x40_0000)
    m.tr(0x40_1000, flushes_during_walk=[(CtlOp.FLUSH_VA, 0x40_0000)])
    assert m.mmu.dtlb.entries() == []


def test_pwc_second_walk_in_same_2m_reads_one_entry(m):
    m.pt.map(0x40_0000, DATA)
    m.pt.map(0x40_1000, DATA + 0x1000)
    m.pt.map(0x60_0000, DATA + 0x2000)
    assert len(m.tr(0x40_0000).walk.reads) == 4
    r = m.tr(0x40_1000)
    assert r.pwc_hit and [lvl for lvl, _, _ in r.walk.reads] == [Level.PT]
    r = m.tr(0x60_0000)  # same 1 GiB, other 2 MiB: starts at the PD
    assert [lvl for lvl, _, _ in r.walk.reads] == [Level.PD, Level.PT]
    assert m.mmu.counters["pwc_hits"] == 2


def test_pwc_is_pcid_tagged_and_dropped_by_invlpg(m):
    other = m.new_space()
    m.pt.map(0x40_0000, DATA)
    m.pt.map(0x40_1000, DATA + 0x1000)
    other.map(0x40_1000, DATA + 0x9000)
    m.mmu.set_flags(pcide=True)
    m.mmu.write_cr3(m.pt.pml4 | 1)
    warm(m, 0x40_0000)
    m.mmu.write_cr3(other.pml4 | 2, noflush=True)
    r = m.tr(0x40_1000)
    assert not r.pwc_hit and len(r.walk.reads) == 4 and r.paddr == DATA + 0x9000
    m.mmu.write_cr3(m.pt.pml4 | 1, noflush=True)
    m.mmu.invlpg(0x40_0000)  # drops every PWC entry of PCID 1, none of PCID 2
    assert {e.pcid for e in m.mmu.pwc.entries()} == {2}
    assert len(m.tr(0x40_1000).walk.reads) == 4


def test_pwc_off():
    m = Machine(MMUConfig(pwc_entries=0))
    m.pt.map(0x40_0000, DATA)
    m.pt.map(0x40_1000, DATA + 0x1000)
    warm(m, 0x40_0000)
    r = m.tr(0x40_1000)
    assert not r.pwc_hit and len(r.walk.reads) == 4 and m.mmu.counters["pwc_hits"] == 0


def test_counters(m):
    m.pt.map(0x40_0000, DATA)
    m.tr(0x40_0000, W)  # walk: 4 reads, leaf A|D write
    m.tr(0x40_0000, W)  # hit
    m.tr(0x40_1000, R)  # walk from the PWC: 1 read, not present
    m.tr(1 << 63, R)  # non-canonical
    assert m.mmu.counters == dict(lookups=3, hits=1, misses=2, walks=2, mem_reads=5, mem_writes=1, faults=2,
                                  pwc_hits=1)


def test_reserved_bit_fault_fills_nothing(m):
    m.pt.set_entry(0x40_0000, Level.PT, DATA | 1 | (1 << 45))
    r = m.tr(0x40_0000)
    assert (r.fault, r.error_code) == (FaultKind.PAGE, PF_P | PF_RSVD | PF_US)
    assert m.mmu.dtlb.entries() == [] and m.mmu.pwc.entries() == []


# --- property: while software leaves the tables alone, the TLB and PWC are transparent ---------------------------

SLOTS = ([(pd << 21 | k << 12, K4) for pd in (0, 1) for k in range(6)]
         + [(0xFFFF_8000_0000_0000 | k << 12, K4) for k in range(4)]
         + [(1 << 30 | k << 21, M2) for k in range(6)]
         + [(1 << 39 | k << 30, G1) for k in range(4)])
# Non-leaf entries whose rights the test may restrict: (an address below it, its level).
TABLES = [(0, Level.PD), (1 << 21, Level.PD), (1 << 30, Level.PDPT), (1 << 39, Level.PML4)]
ELSEWHERE = [0x7FFF_FFFF_F000, 0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_F000, 1 << 21 | 0x1F_F000]

mostly = st.sampled_from([True, True, True, False])
flags = st.fixed_dictionaries({"writable": mostly, "user": mostly, "nx": st.booleans(), "global_": st.booleans(),
                               "accessed": st.booleans(), "dirty": st.booleans()})
leaf_kind = st.sampled_from(["mapped", "mapped", "mapped", "reserved bit", "absent"])
restriction = st.tuples(st.booleans(), st.booleans(), st.booleans())  # clear R/W, clear U/S, set XD
geometry = st.sampled_from([(4, 1, 1), (8, 2, 2), (16, 4, 2), (16, 16, 4), (32, 8, 8)])


def random_ctl(rng, ctrl):
    """A control request that changes no page table: a flush, or CR3 with the same PML4 and a PCID 0..2."""
    op = rng.choice(list(CtlOp))
    if op is CtlOp.WRITE_CR3:
        return op, (ctrl.cr3 & ~0xFFF) | rng.randrange(3) | (CR3_NOFLUSH if rng.random() < 0.5 else 0)
    if op is CtlOp.FLUSH_VA:
        va, size = rng.choice(SLOTS)
        return op, va + rng.randrange(size.bytes)
    return op, rng.randrange(3)


def random_va(rng, recent):
    """Half the time a page used lately (so TLB hits happen), sometimes an address outside every slot."""
    if rng.random() < 0.05:
        return rng.choice(ELSEWHERE)
    va, size = rng.choice(recent) if recent and rng.random() < 0.5 else rng.choice(SLOTS)
    recent[:] = recent[-7:] + [(va, size)]
    return va + rng.randrange(size.bytes)


@pytest.mark.parametrize("policy", list(Policy))
@settings(max_examples=25, deadline=None)
@given(leaves=st.lists(st.tuples(leaf_kind, flags), min_size=len(SLOTS), max_size=len(SLOTS)),
       restrict=st.lists(st.tuples(st.integers(0, len(TABLES) - 1), restriction), max_size=3),
       itlb=geometry, dtlb=geometry, pwc=st.sampled_from([0, 1, 2, 8]), seed=st.integers(0, 2**32 - 1))
def test_tlb_and_pwc_are_transparent(policy, leaves, restrict, itlb, dtlb, pwc, seed):
    """Requests, flushes and flag changes (seeded by ``seed``) over tables that only the MMU's own A/D writes
    change: every answer equals a plain walk of the tables, whatever the TLBs and the PWC hold."""
    cfg = MMUConfig(itlb=TLBConfig(*itlb[:2], policy, itlb[2]), dtlb=TLBConfig(*dtlb[:2], policy, dtlb[2]),
                    pwc_entries=pwc)
    m = Machine(cfg)
    for slot, ((va, size), (kind, leaf)) in enumerate(zip(SLOTS, leaves)):
        if kind != "absent":
            addr = m.pt.map(va, DATA + slot * (1 << 30), size, **leaf)
            if kind == "reserved bit":
                m.mem.write64(addr, m.mem.read64(addr) | 1 << 45)
    for slot, (no_rw, no_us, xd) in restrict:
        va, level = TABLES[slot]
        value = m.pt.get_entry(va, level)
        if value:
            m.pt.set_entry(va, level, (value & ~((RW if no_rw else 0) | (US if no_us else 0))) | (XD if xd else 0))
    mmu, rng, recent = m.mmu, random.Random(seed), []
    for _ in range(300):
        roll = rng.random()
        if roll < 0.05:
            mmu.ctl(*random_ctl(rng, mmu.ctrl))
        elif roll < 0.08:
            mmu.set_flags(wp=rng.random() < 0.5, smep=rng.random() < 0.5, smap=rng.random() < 0.5,
                          pcide=rng.random() < 0.5)
        else:
            va, access, user = random_va(rng, recent), rng.choice(list(Access)), rng.random() < 0.7
            during = [random_ctl(rng, mmu.ctrl)] if rng.random() < 0.05 else []
            want = walk(m.mem, mmu.ctrl, va, access, user, apply=False)
            got = mmu.translate(va, access, user, flushes_during_walk=during)
            assert (got.paddr, got.fault, got.error_code, got.size) == (
                want.paddr or 0, want.fault, want.error_code, want.size if want.size is not None else K4), hex(va)
            if got.fault is FaultKind.NONE:  # a hit never skips an A/D write the access needs
                leaf = walk(m.mem, mmu.ctrl, va, Access.READ, user, apply=False).reads[-1][2]
                assert leaf & A and (access != Access.WRITE or leaf & D), hex(va)
    c = mmu.counters
    assert c["lookups"] == c["hits"] + c["misses"] and c["walks"] == c["misses"]
