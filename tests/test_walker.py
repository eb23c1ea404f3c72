"""The reference walker against the Intel SDM Vol. 3A chapter 4 and docs/reference.md "The walk"."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.mm.page_alloc import BuddyAllocator
from model.reference.ref_walker import ControlRegs, WalkStart, access_allowed, fault_error_code, walk
from model.x86 import pte
from model.x86.pgtable import PageTables
from model.x86.physmem import PhysMem
from model.x86.pte import PS, RW, US, XD, A, Access, D, FaultKind, Level, P, PageSize

K4, M2, G1 = PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G
R, W, X = Access.READ, Access.WRITE, Access.FETCH
LEVELS = (Level.PML4, Level.PDPT, Level.PD, Level.PT)
VA = 0x0000_7F12_3440_0000  # 2 MiB aligned
VA_1G = 0x0000_7F00_4000_0000  # 1 GiB aligned
PA = 0x8000_0000  # 2 GiB: aligned for every page size (data pages need not lie in PhysMem)


def make(maxphyaddr=40):
    mem = PhysMem(64 << 20)
    return mem, PageTables(mem, BuddyAllocator(4096, 4096), maxphyaddr)


def mapped(size=K4, va=None, **flags):
    """Tables with one page mapped; returns (mem, tables, ctrl, va)."""
    mem, pt = make()
    va = (VA_1G if size == G1 else VA) if va is None else va
    pt.map(va, PA, size, **flags)
    return mem, pt, ControlRegs(cr3=pt.pml4), va


def levels_used(size):
    return LEVELS[: 4 - size]


def snapshot(mem, pt, va, size):
    return [mem.read64(pt.entry_addr(va, lv)) for lv in levels_used(size)]


# --- successful translation -----------------------------------------------------

@pytest.mark.parametrize("size", list(PageSize))
def test_translation_is_frame_plus_offset(size):
    """SDM 4.5: the page frame from the leaf plus the low 12/21/30 bits of the linear address."""
    mem, pt, ctrl, va = mapped(size)
    offset = size.bytes - 8
    r = walk(mem, ctrl, va + offset, R, True)
    assert r.fault == FaultKind.NONE and r.error_code == 0
    assert (r.paddr, r.size, r.frame) == (PA + offset, size, PA)
    assert [lv for lv, _, _ in r.reads] == list(levels_used(size))


def test_each_entry_address_is_table_base_plus_8_times_index():
    """SDM 4.5: CR3[M-1:12] locates the PML4; each entry's address field locates the next table."""
    mem, pt, ctrl, va = mapped()
    r = walk(mem, ctrl, va, R, False)
    assert [addr for _, addr, _ in r.reads] == [pt.entry_addr(va, lv) for lv in LEVELS]
    assert r.reads[0][1] == pt.pml4 + 8 * Level.PML4.index(va)


@pytest.mark.parametrize("size", [M2, G1])
def test_pat_bit_12_of_a_huge_leaf_is_ignored(size):
    """SDM tables 4-16, 4-18: bit 12 of a 1 GiB / 2 MiB leaf is PAT, not part of the address."""
    mem, pt, ctrl, va = mapped(size)
    pt.set_entry(va, size.leaf_level, pt.get_entry(va, size.leaf_level) | (1 << 12))
    r = walk(mem, ctrl, va + 0x234, R, False)
    assert r.fault == FaultKind.NONE and (r.paddr, r.frame) == (PA + 0x234, PA)


def test_bit_7_of_a_4k_pte_is_pat_not_page_size():
    """SDM table 4-19: bit 7 of a PTE is PAT; a PTE always maps a 4 KiB page."""
    mem, pt, ctrl, va = mapped()
    pt.set_pte(va, pt.get_pte(va) | PS)
    r = walk(mem, ctrl, va, R, False)
    assert r.fault == FaultKind.NONE and r.size == K4


def test_cr3_low_bits_and_pcid_are_not_part_of_the_pml4_base():
    """SDM 4.5: CR3[M-1:12] is the PML4 base; CR3[11:0] is the PCID with CR4.PCIDE=1 (SDM 4.10.1)."""
    mem, pt, _, va = mapped()
    ctrl = ControlRegs(cr3=pt.pml4 | 0x123 | (1 << 63), pcide=True)
    assert ctrl.pml4_base(40) == pt.pml4 and ctrl.pcid == 0x123
    assert ControlRegs(cr3=pt.pml4 | 0x123).pcid == 0
    assert walk(mem, ctrl, va, R, False).paddr == PA


def test_global_and_dirty_come_from_the_leaf():
    """SDM 4.10.2.4: G is meaningful only in the leaf; non-leaf entries here have no G."""
    mem, pt, ctrl, va = mapped(global_=True, dirty=True, accessed=True)
    r = walk(mem, ctrl, va, R, False)
    assert r.global_ and r.dirty
    mem, pt, ctrl, va = mapped()
    r = walk(mem, ctrl, va, R, False)
    assert not r.global_ and not r.dirty


def test_combined_permissions_are_and_of_rw_us_and_or_of_xd():
    """SDM 4.6.1: access rights are determined by the R/W, U/S and XD of every entry used."""
    mem, pt, ctrl, va = mapped()
    pt.set_entry(va, Level.PDPT, pt.get_entry(va, Level.PDPT) & ~RW)
    pt.set_entry(va, Level.PD, pt.get_entry(va, Level.PD) | XD)
    r = walk(mem, ctrl, va, R, True)
    assert (r.writable, r.user, r.nx) == (False, True, True)
    assert [n[3:] for n in r.nonleaf] == [(True, True, False), (False, True, False), (False, True, True)]


# --- not present (P=0) at each level ---------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("access,user", [(R, False), (W, True), (X, True), (X, False)])
def test_not_present_at_each_level_faults_with_p_clear(level, access, user):
    """SDM 4.7: P=0 in the error code when the fault is a not-present entry; the walk stops there."""
    mem, pt, ctrl, va = mapped()
    pt.set_entry(va, level, pt.get_entry(va, level) & ~P)
    r = walk(mem, ctrl, va, access, user)
    want = (pte.PF_WR if access == W else 0) | (pte.PF_US if user else 0) | (pte.PF_ID if access == X else 0)
    assert r.fault == FaultKind.PAGE and r.error_code == want
    assert len(r.reads) == 5 - level and r.reads[-1][0] == level
    assert r.paddr is None and r.writes == [] and r.nonleaf == []


@pytest.mark.parametrize("level", LEVELS)
def test_a_not_present_entry_has_its_other_bits_ignored(level):
    """SDM 4.7 / table 4-15ff.: if P=0 the other bits are ignored, so reserved bits give no RSVD."""
    mem, pt, ctrl, va = mapped()
    pt.set_entry(va, level, 0xFFFF_FFFF_FFFF_FFFE)
    r = walk(mem, ctrl, va, R, False, maxphyaddr=36)
    assert r.fault == FaultKind.PAGE and r.error_code == 0


@given(st.integers(min_value=0, max_value=(1 << 48) - 1), st.sampled_from(list(Access)), st.booleans())
@settings(max_examples=200, deadline=None)
def test_unmapped_addresses_fault_with_p_clear(vaddr, access, user):
    """Property: with one 4 KiB page mapped, any other page faults not-present (SDM 4.7, P=0) at the
    first level whose index differs from the mapped page's, having read one entry per level down to it."""
    mem, pt, ctrl, va = mapped()
    vaddr = pte.canonical(vaddr)
    if vaddr >> 12 == va >> 12:
        vaddr ^= 1 << 12
    r = walk(mem, ctrl, vaddr, access, user)
    assert r.fault == FaultKind.PAGE and not r.error_code & pte.PF_P
    shared = 0
    while shared < 3 and LEVELS[shared].index(vaddr) == LEVELS[shared].index(va):
        shared += 1
    assert len(r.reads) == shared + 1 and r.writes == []


# --- reserved bits ----------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("m,bit", [(40, 40), (40, 51), (36, 36), (36, 45), (46, 46), (51, 51)])
def test_bits_m_to_51_set_give_rsvd_at_each_level(level, m, bit):
    """SDM 4.7: RSVD=1 (with P=1) when a reserved bit is set in any entry used; the walk stops there."""
    mem, pt, ctrl, va = mapped()
    pt.set_entry(va, level, pt.get_entry(va, level) | (1 << bit))
    r = walk(mem, ctrl, va, W, True, maxphyaddr=m)
    assert r.fault == FaultKind.PAGE
    assert r.error_code == pte.PF_P | pte.PF_RSVD | pte.PF_WR | pte.PF_US
    assert r.reads[-1][0] == level and r.writes == []


def test_address_bits_below_maxphyaddr_are_not_reserved():
    """SDM 4.5: bits 12..M-1 are address bits; with M=52 bit 51 is an address bit."""
    mem, pt, ctrl, va = mapped()
    pt.set_pte(va, pt.get_pte(va) | (1 << 51))
    assert walk(mem, ctrl, va, R, False, maxphyaddr=52).paddr == PA | (1 << 51)


@pytest.mark.parametrize("level", LEVELS)
def test_xd_with_nxe_off_is_a_reserved_bit_at_each_level(level):
    """SDM 4.5: with IA32_EFER.NXE=0, bit 63 is reserved: RSVD fault even on a read."""
    mem, pt, ctrl, va = mapped()
    pt.set_entry(va, level, pt.get_entry(va, level) | XD)
    r = walk(mem, ControlRegs(cr3=pt.pml4, nxe=False), va, R, False)
    assert r.error_code == pte.PF_P | pte.PF_RSVD and r.reads[-1][0] == level


def test_ps_in_a_pml4e_is_reserved():
    """SDM table 4-15: bit 7 of a PML4E is reserved (must be 0)."""
    mem, pt, ctrl, va = mapped()
    pt.set_entry(va, Level.PML4, pt.get_entry(va, Level.PML4) | PS)
    r = walk(mem, ctrl, va, R, True)
    assert r.error_code == pte.PF_P | pte.PF_RSVD | pte.PF_US and len(r.reads) == 1


@pytest.mark.parametrize("size,bit", [(M2, 13), (M2, 16), (M2, 20), (G1, 13), (G1, 21), (G1, 29)])
def test_huge_leaf_low_address_bits_are_reserved(size, bit):
    """SDM tables 4-16, 4-18: bits 20:13 of a 2 MiB PDE and 29:13 of a 1 GiB PDPTE are reserved."""
    mem, pt, ctrl, va = mapped(size)
    pt.set_entry(va, size.leaf_level, pt.get_entry(va, size.leaf_level) | (1 << bit))
    r = walk(mem, ctrl, va, R, False)
    assert r.error_code == pte.PF_P | pte.PF_RSVD and r.reads[-1][0] == size.leaf_level


def test_reserved_bits_win_over_access_rights():
    """reference.md step 4: permissions are checked only after a leaf was reached without a fault."""
    mem, pt, ctrl, va = mapped(user=False, writable=False)
    pt.set_pte(va, pt.get_pte(va) | (1 << 45))
    assert walk(mem, ctrl, va, W, True).error_code == pte.PF_P | pte.PF_RSVD | pte.PF_WR | pte.PF_US


def test_not_present_is_checked_before_reserved_bits():
    """reference.md step 3: P is checked before the reserved bits of the same entry."""
    mem, pt, ctrl, va = mapped()
    pt.set_pte(va, (pt.get_pte(va) | (1 << 45)) & ~P)
    assert walk(mem, ctrl, va, R, False).error_code == 0


# --- access rights ----------------------------------------------------------------

def test_supervisor_write_to_read_only_page_depends_on_wp():
    """SDM 4.6.1: with CR0.WP=0 supervisor writes ignore R/W; with WP=1 they need R/W=1 everywhere."""
    mem, pt, ctrl, va = mapped(writable=False, user=False)
    assert walk(mem, ControlRegs(cr3=pt.pml4, wp=True), va, W, False).error_code == pte.PF_P | pte.PF_WR
    r = walk(mem, ControlRegs(cr3=pt.pml4, wp=False), va, W, False)
    assert r.fault == FaultKind.NONE and r.dirty


@pytest.mark.parametrize("wp", [False, True])
def test_user_write_to_read_only_page_faults_whatever_wp(wp):
    """SDM 4.6.1: user-mode writes need R/W=1 in every entry; CR0.WP does not matter."""
    mem, pt, ctrl, va = mapped(writable=False)
    r = walk(mem, ControlRegs(cr3=pt.pml4, wp=wp), va, W, True)
    assert r.error_code == pte.PF_P | pte.PF_WR | pte.PF_US


@pytest.mark.parametrize("access", list(Access))
def test_user_access_to_a_supervisor_page_faults(access):
    """SDM 4.6.1: user mode may not access a supervisor-mode address (U/S=0 in some entry)."""
    mem, pt, ctrl, va = mapped(user=False)
    r = walk(mem, ctrl, va, access, True)
    assert r.fault == FaultKind.PAGE and r.error_code & (pte.PF_P | pte.PF_US) == pte.PF_P | pte.PF_US


@pytest.mark.parametrize("user", [False, True])
def test_fetch_from_xd_page_faults_with_nxe(user):
    """SDM 4.6.1: with NXE=1, instructions may not be fetched from a page with XD=1 in any entry."""
    mem, pt, ctrl, va = mapped(nx=True)
    r = walk(mem, ctrl, va, X, user)
    assert r.error_code == pte.PF_P | pte.PF_ID | (pte.PF_US if user else 0)
    assert walk(mem, ctrl, va, R, user).fault == FaultKind.NONE


def test_with_nxe_off_fetches_are_not_restricted_by_xd():
    """SDM 4.6.1: with NXE=0 any readable page is executable."""
    mem, pt, ctrl, va = mapped()
    assert walk(mem, ControlRegs(cr3=pt.pml4, nxe=False), va, X, True).fault == FaultKind.NONE


def test_smep_blocks_supervisor_fetch_from_a_user_page():
    """SDM 4.6.1: with CR4.SMEP=1, supervisor-mode fetches from user-mode addresses are not allowed."""
    mem, pt, ctrl, va = mapped(user=True)
    on = ControlRegs(cr3=pt.pml4, smep=True, nxe=False)
    assert walk(mem, on, va, X, False).error_code == pte.PF_P | pte.PF_ID
    assert walk(mem, ControlRegs(cr3=pt.pml4), va, X, False).fault == FaultKind.NONE
    assert walk(mem, on, va, R, False).fault == FaultKind.NONE  # SMEP concerns fetches only
    assert walk(mem, on, va, X, True).fault == FaultKind.NONE  # and supervisor mode only


def test_smep_allows_supervisor_fetch_from_a_supervisor_page():
    mem, pt, ctrl, va = mapped(user=False)
    assert walk(mem, ControlRegs(cr3=pt.pml4, smep=True), va, X, False).fault == FaultKind.NONE


@pytest.mark.parametrize("access", [R, W])
def test_smap_blocks_supervisor_data_access_to_a_user_page(access):
    """SDM 4.6.1: with CR4.SMAP=1 (and no EFLAGS.AC, which we do not model) supervisor reads and writes
    of user-mode addresses fault."""
    mem, pt, ctrl, va = mapped(user=True)
    on = ControlRegs(cr3=pt.pml4, smap=True)
    r = walk(mem, on, va, access, False)
    assert r.error_code == pte.PF_P | (pte.PF_WR if access == W else 0)
    assert walk(mem, ControlRegs(cr3=pt.pml4), va, access, False).fault == FaultKind.NONE
    assert walk(mem, on, va, access, True).fault == FaultKind.NONE  # user mode is not affected


def test_smap_does_not_restrict_supervisor_fetches():
    """SDM 4.6.1: SMAP governs data accesses; supervisor fetches from user pages are SMEP's business."""
    mem, pt, ctrl, va = mapped(user=True)
    assert walk(mem, ControlRegs(cr3=pt.pml4, smap=True), va, X, False).fault == FaultKind.NONE


@pytest.mark.parametrize("nxe,smep,want_id", [(False, False, False), (True, False, True), (False, True, True),
                                               (True, True, True)])
def test_id_bit_is_set_for_fetches_only_with_nxe_or_smep(nxe, smep, want_id):
    """SDM 4.7: I/D=1 if the access was an instruction fetch and CR4.SMEP=1 or IA32_EFER.NXE=1."""
    mem, pt = make()
    ctrl = ControlRegs(cr3=pt.pml4, nxe=nxe, smep=smep)
    assert bool(walk(mem, ctrl, 0x1000, X, True).error_code & pte.PF_ID) == want_id
    assert not walk(mem, ctrl, 0x1000, R, True).error_code & pte.PF_ID
    assert not walk(mem, ctrl, 0x1000, W, True).error_code & pte.PF_ID


def test_fault_error_code_rsvd_implies_p():
    """SDM 4.7: a reserved-bit violation is reported with P=1 (the entry was present)."""
    ctrl = ControlRegs()
    assert fault_error_code(R, False, ctrl, protection=False, rsvd=True) == pte.PF_P | pte.PF_RSVD
    assert fault_error_code(W, True, ctrl, protection=True, rsvd=False) == pte.PF_P | pte.PF_WR | pte.PF_US
    assert fault_error_code(X, False, ctrl, protection=False, rsvd=False) == pte.PF_ID


def sdm_rule(us, rw, xd, access, user_mode, wp, nxe, smep, smap):
    """SDM 4.6.1, "Determination of access rights", in its own words, independent of the walker.

    A user-mode address has U/S=1 in every paging-structure entry controlling the translation;
    any other address is a supervisor-mode address.  Returns True when the access is allowed.
    """
    user_mode_address = all(us)
    writable_everywhere = all(rw)
    executable = not (nxe and any(xd))
    if user_mode:
        if not user_mode_address:
            return False  # supervisor-mode addresses are inaccessible to user mode
        if access == W:
            return writable_everywhere  # user writes need R/W=1 in every entry (whatever WP)
        if access == X:
            return executable
        return True  # data may be read from any user-mode address
    if access == X:
        if user_mode_address and smep:
            return False  # SMEP: no supervisor fetches from user-mode addresses
        return executable
    if user_mode_address and smap:
        return False  # SMAP with EFLAGS.AC=0: no supervisor data access to user-mode addresses
    if access == W and wp:
        return writable_everywhere
    return True


@settings(max_examples=400, deadline=None)
@given(size=st.sampled_from(list(PageSize)), us=st.lists(st.booleans(), min_size=4, max_size=4),
       rw=st.lists(st.booleans(), min_size=4, max_size=4), xd=st.lists(st.booleans(), min_size=4, max_size=4),
       access=st.sampled_from(list(Access)), user=st.booleans(),
       ctl=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()))
def test_every_combination_of_us_rw_xd_across_levels_gives_the_sdm_fault(size, us, rw, xd, access, user, ctl):
    """Property: U/S, R/W, XD set per level (via set_entry) fault exactly as SDM 4.6.1 and 4.7 say.

    With NXE=0 an XD bit is reserved (SDM 4.5): the walk stops at the first such entry with RSVD.
    """
    wp, nxe, smep, smap = ctl
    mem, pt, _, va = mapped(size)
    used = levels_used(size)
    for i, level in enumerate(used):
        value = pt.get_entry(va, level) & ~(RW | US | XD)
        pt.set_entry(va, level, value | (RW if rw[i] else 0) | (US if us[i] else 0) | (XD if xd[i] else 0))
    before = snapshot(mem, pt, va, size)
    ctrl = ControlRegs(cr3=pt.pml4, wp=wp, nxe=nxe, smep=smep, smap=smap)
    r = walk(mem, ctrl, va, access, user)

    n = len(used)
    us, rw, xd = us[:n], rw[:n], xd[:n]
    base = (pte.PF_WR if access == W else 0) | (pte.PF_US if user else 0) \
        | (pte.PF_ID if access == X and (nxe or smep) else 0)
    if not nxe and any(xd):
        stop = xd.index(True)
        assert r.fault == FaultKind.PAGE and r.error_code == base | pte.PF_P | pte.PF_RSVD
        assert len(r.reads) == stop + 1
    elif sdm_rule(us, rw, xd, access, user, wp, nxe, smep, smap):
        assert r.fault == FaultKind.NONE and r.paddr == PA
        assert (r.writable, r.user, r.nx) == (all(rw), all(us), nxe and any(xd))
    else:
        assert r.fault == FaultKind.PAGE and r.error_code == base | pte.PF_P
    if r.fault != FaultKind.NONE:
        assert r.writes == [] and snapshot(mem, pt, va, size) == before


def test_all_4096_rw_us_xd_combinations_of_a_4k_walk_follow_the_sdm_rule():
    """Exhaustive companion of the property above for 4 KiB pages with NXE=1: all 2**12 settings of
    R/W, U/S, XD over the four levels, every access, mode and WP/SMEP/SMAP setting."""
    mem, pt, _, va = mapped()
    addrs = [pt.entry_addr(va, level) for level in LEVELS]
    values = [mem.read64(a) & ~(RW | US | XD) for a in addrs]
    ctrls = [ControlRegs(cr3=pt.pml4, wp=wp, smep=smep, smap=smap)
             for wp in (False, True) for smep in (False, True) for smap in (False, True)]
    for combo in range(1 << 12):
        rw, us, xd = ([bool(combo >> (k * 4 + i) & 1) for i in range(4)] for k in range(3))
        for i, addr in enumerate(addrs):
            mem.write64(addr, values[i] | (RW if rw[i] else 0) | (US if us[i] else 0) | (XD if xd[i] else 0))
        for ctrl in ctrls:
            for access in Access:
                for user in (False, True):
                    allowed = sdm_rule(us, rw, xd, access, user, ctrl.wp, True, ctrl.smep, ctrl.smap)
                    r = walk(mem, ctrl, va, access, user, apply=False)
                    assert (r.fault == FaultKind.NONE) == allowed, (combo, ctrl, access, user)


@settings(max_examples=300, deadline=None)
@given(us=st.booleans(), rw=st.booleans(), nx=st.booleans(), access=st.sampled_from(list(Access)),
       user=st.booleans(), ctl=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()))
def test_access_allowed_agrees_with_the_sdm_rule(us, rw, nx, access, user, ctl):
    wp, nxe, smep, smap = ctl
    ctrl = ControlRegs(wp=wp, nxe=nxe, smep=smep, smap=smap)
    assert access_allowed(rw, us, nx, access, user, ctrl) == sdm_rule([us], [rw], [nx], access, user, *ctl)


# --- accessed and dirty -----------------------------------------------------------

def clear_a(pt, va, size=K4):
    for level in levels_used(size):
        pt.set_entry(va, level, pt.get_entry(va, level) & ~A)


@pytest.mark.parametrize("size", list(PageSize))
def test_a_is_set_top_down_one_write_per_entry_and_d_joins_the_leaf_write(size):
    """reference.md step 6 (SDM 4.8: A in every entry used, D in the leaf on a write): top-down, one
    64-bit write per entry, the leaf's A and D together."""
    mem, pt, ctrl, va = mapped(size)
    clear_a(pt, va, size)
    before = snapshot(mem, pt, va, size)
    addrs = [pt.entry_addr(va, lv) for lv in levels_used(size)]
    r = walk(mem, ctrl, va, W, True)
    want = [(a, v | A) for a, v in zip(addrs[:-1], before[:-1])] + [(addrs[-1], before[-1] | A | D)]
    assert r.writes == want
    assert snapshot(mem, pt, va, size) == [v for _, v in want]
    assert r.dirty


def test_a_read_sets_a_but_not_d():
    """SDM 4.8: D is set on a write to the page only; A on any access."""
    mem, pt, ctrl, va = mapped()
    clear_a(pt, va)
    r = walk(mem, ctrl, va, R, False)
    assert len(r.writes) == 4 and not r.writes[-1][1] & D and not r.dirty
    assert not pt.lookup(va).dirty and pt.lookup(va).accessed


def test_d_is_never_written_into_a_non_leaf_entry():
    """SDM 4.8: the dirty flag is set only in the entry that maps the page."""
    mem, pt, ctrl, va = mapped()
    for level in (Level.PML4, Level.PDPT, Level.PD):
        pt.set_entry(va, level, pt.get_entry(va, level) & ~(A | D))
    r = walk(mem, ctrl, va, W, True)
    assert all(not v & D for _, v in r.writes[:-1]) and r.writes[-1][1] & D


def test_entries_that_already_have_a_and_d_are_not_written():
    mem, pt, ctrl, va = mapped(accessed=True, dirty=True)
    assert walk(mem, ctrl, va, W, True).writes == []
    mem, pt, ctrl, va = mapped(accessed=True)
    pt.set_entry(va, Level.PDPT, pt.get_entry(va, Level.PDPT) & ~A)
    r = walk(mem, ctrl, va, W, True)
    assert [a for a, _ in r.writes] == [pt.entry_addr(va, Level.PDPT), pt.entry_addr(va, Level.PT)]


def test_a_second_walk_writes_nothing():
    mem, pt, ctrl, va = mapped()
    clear_a(pt, va)
    assert len(walk(mem, ctrl, va, W, True).writes) == 4
    assert walk(mem, ctrl, va, W, True).writes == []


@pytest.mark.parametrize("level", LEVELS)
def test_a_faulting_walk_writes_nothing(level):
    """reference.md step 6: A/D are written on success only (the hardware then needs no rollback)."""
    mem, pt, ctrl, va = mapped(writable=False)
    clear_a(pt, va)
    pt.set_entry(va, level, pt.get_entry(va, level) & ~US)
    before = snapshot(mem, pt, va, K4)
    r = walk(mem, ctrl, va, W, True)
    assert r.fault == FaultKind.PAGE and r.writes == [] and snapshot(mem, pt, va, K4) == before


def test_apply_false_reports_the_writes_without_making_them():
    mem, pt, ctrl, va = mapped()
    clear_a(pt, va)
    before = snapshot(mem, pt, va, K4)
    r = walk(mem, ctrl, va, W, True, apply=False)
    assert len(r.writes) == 4 and r.dirty
    assert snapshot(mem, pt, va, K4) == before


def test_nonleaf_lists_what_the_page_walk_cache_is_filled_with():
    """reference.md PWC: each non-leaf entry read, top-down, with its value as written back (A set)."""
    mem, pt, ctrl, va = mapped()
    clear_a(pt, va)
    r = walk(mem, ctrl, va, R, True)
    assert [lv for lv, *_ in r.nonleaf] == [Level.PML4, Level.PDPT, Level.PD]
    assert [base for _, base, *_ in r.nonleaf] == [r.reads[i + 1][1] & ~0xFFF for i in range(3)]
    assert [v for _, _, v, *_ in r.nonleaf] == [v for _, v in r.writes[:3]]


# --- non-canonical ----------------------------------------------------------------

@pytest.mark.parametrize("vaddr", [0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_F000, 0x8000_0000_0000_1000,
                                   0x0001_0000_0000_0000 | VA])
def test_non_canonical_address_is_never_walked(vaddr):
    """SDM 3.3.7.1 / 6.15: a non-canonical address raises #GP, not #PF; no entry is read."""
    mem, pt, ctrl, va = mapped()
    r = walk(mem, ctrl, vaddr, R, False)
    assert r.fault == FaultKind.NONCANONICAL and r.error_code == 0
    assert r.reads == [] and r.writes == [] and r.paddr is None


def test_upper_half_canonical_address_is_walked():
    mem, pt = make()
    va = 0xFFFF_8800_0000_0000
    pt.map(va, PA, user=False)
    r = walk(mem, ControlRegs(cr3=pt.pml4), va + 0x10, R, False)
    assert r.paddr == PA + 0x10 and r.reads[0][1] == pt.pml4 + 8 * 272


# --- walks from a page-walk-cache hit ----------------------------------------------

@pytest.mark.parametrize("level", [Level.PDPT, Level.PD, Level.PT])
def test_walk_from_a_walk_start_reads_only_the_levels_below(level):
    """reference.md PWC: a hit supplies the next table and the combined rights; entries it supplied are
    not read, not written and not re-inserted."""
    mem, pt, ctrl, va = mapped()
    clear_a(pt, va)
    full = walk(mem, ctrl, va, R, True, apply=False)
    above = 4 - level  # levels the PWC supplies
    start = WalkStart(level, pt.entry_addr(va, level) & ~0xFFF, True, True, False)
    r = walk(mem, ctrl, va, R, True, start=start)
    assert r.paddr == full.paddr
    assert r.reads == full.reads[above:]
    assert r.writes == full.writes[above:]
    assert r.nonleaf == full.nonleaf[above:]


@pytest.mark.parametrize("field,access,user,code", [
    ("user", R, True, pte.PF_P | pte.PF_US), ("writable", W, True, pte.PF_P | pte.PF_WR | pte.PF_US),
    ("nx", X, True, pte.PF_P | pte.PF_US | pte.PF_ID),
])
def test_walk_start_rights_combine_with_the_levels_below(field, access, user, code):
    mem, pt, ctrl, va = mapped()
    rights = dict(writable=True, user=True, nx=False)
    rights[field] = not rights[field]
    start = WalkStart(Level.PD, pt.entry_addr(va, Level.PD) & ~0xFFF, **rights)
    r = walk(mem, ctrl, va, access, user, start=start)
    assert r.fault == FaultKind.PAGE and r.error_code == code


def test_walk_start_must_be_below_pml4():
    with pytest.raises(ValueError, match="PDPT, PD or PT"):
        WalkStart(Level.PML4, 0, True, True, False)


# --- map then walk -------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(size=st.sampled_from(list(PageSize)), page=st.integers(min_value=0, max_value=(1 << 36) - 1),
       frame=st.integers(min_value=0, max_value=(1 << 28) - 1), offset=st.integers(min_value=0),
       writable=st.booleans(), user=st.booleans(), nx=st.booleans())
def test_map_then_walk_returns_the_mapping(size, page, frame, offset, writable, user, nx):
    """Property: for every page size, a walk of a mapped address gives frame | offset (SDM 4.5)."""
    mem, pt = make()
    va = pte.canonical((page << 12) & ~(size.bytes - 1))
    pa = (frame << 12) & ~(size.bytes - 1)
    offset %= size.bytes
    pt.map(va, pa, size, writable=writable, user=user, nx=nx)
    r = walk(mem, ControlRegs(cr3=pt.pml4), va + offset, R, False)
    assert r.fault == FaultKind.NONE
    assert (r.paddr, r.size, r.frame, r.writable, r.user, r.nx) == (pa + offset, size, pa, writable, user, nx)
