"""The entry format, address split and error code, checked against the Intel SDM Vol. 3A, chapter 4."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.x86 import pte
from model.x86.pte import PTE, Level, PageSize, canonical, is_canonical, reserved_mask, split_vaddr

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)

# SDM table 4-19 (a PTE that maps a 4 KiB page): bit position of each flag.
SDM_BITS = {"present": 0, "writable": 1, "user": 2, "pwt": 3, "pcd": 4, "accessed": 5, "dirty": 6,
            "ps": 7, "global_": 8, "xd": 63}
FLAGS = list(SDM_BITS)


@pytest.mark.parametrize("field,bit", SDM_BITS.items())
def test_each_flag_sits_at_its_sdm_bit(field, bit):
    """SDM tables 4-15..4-20: P=0, R/W=1, U/S=2, PWT=3, PCD=4, A=5, D=6, PS=7, G=8, XD=63."""
    decoded = PTE.decode(1 << bit)
    assert getattr(decoded, field)
    assert [f for f in FLAGS if getattr(decoded, f)] == [field]
    assert PTE(**{field: True}).encode() == 1 << bit


@given(flags=st.fixed_dictionaries({f: st.booleans() for f in FLAGS}),
       frame=st.integers(min_value=0, max_value=(1 << 40) - 1),
       low_ignored=st.integers(min_value=0, max_value=7), high_ignored=st.integers(min_value=0, max_value=2047))
def test_encode_decode_round_trip_every_field(flags, frame, low_ignored, high_ignored):
    """SDM 4.5: an entry is flags, the address field (bits 12..51) and software-available bits 9-11, 52-62."""
    entry = PTE(**flags, addr=frame << 12, ignored=(low_ignored << 9) | (high_ignored << 52))
    value = entry.encode()
    assert PTE.decode(value) == entry
    assert (value >> 12) & ((1 << 40) - 1) == frame
    assert (value >> 9) & 7 == low_ignored and (value >> 52) & 2047 == high_ignored


@given(U64)
def test_decode_encode_is_lossless_for_any_64bit_value(value):
    """Every bit of an entry is a flag, the address field or an ignored bit: nothing is dropped."""
    assert PTE.decode(value).encode() == value


@pytest.mark.parametrize("addr", [0x1001, 0x800, 1 << 52])
def test_encode_refuses_an_address_the_field_cannot_hold(addr):
    """SDM 4.5: the address field is bits 12..51, so a base must be 4 KiB aligned and below 2**52."""
    with pytest.raises(ValueError, match="aligned"):
        PTE(present=True, addr=addr).encode()


@pytest.mark.parametrize("bits", [1 << 0, 1 << 12, 1 << 63])
def test_encode_refuses_ignored_bits_outside_9_11_and_52_62(bits):
    with pytest.raises(ValueError, match="ignored"):
        PTE(ignored=bits).encode()


def test_describe_lists_flags_or_a_dash():
    assert PTE(present=True, writable=True, xd=True).describe() == "XD W P"
    assert PTE().describe() == "-"


# --- canonical addresses (SDM 3.3.7.1) -------------------------------------------

@pytest.mark.parametrize("vaddr,ok", [
    (0, True), (0x0000_7FFF_FFFF_FFFF, True), (0x0000_8000_0000_0000, False),
    (0xFFFF_7FFF_FFFF_FFFF, False), (0xFFFF_8000_0000_0000, True), (0xFFFF_FFFF_FFFF_FFFF, True),
    (0x0001_0000_0000_0000, False), (0x8000_0000_0000_0000, False),
])
def test_canonical_means_bits_63_to_47_all_equal(vaddr, ok):
    """SDM 3.3.7.1: with 48-bit linear addresses, bits 63:47 must be copies of bit 47."""
    assert is_canonical(vaddr) is ok


@given(U64)
def test_canonical_sign_extends_bit_47(vaddr):
    c = canonical(vaddr)
    assert is_canonical(c)
    assert c & ((1 << 48) - 1) == vaddr & ((1 << 48) - 1)
    assert (c == vaddr) == is_canonical(vaddr)


@given(st.integers(min_value=0, max_value=(1 << 48) - 1))
def test_split_follows_sdm_figure_4_8(vaddr):
    """SDM figure 4-8: PML4 [47:39], PDPT [38:30], PD [29:21], PT [20:12], offset [11:0]."""
    parts = split_vaddr(vaddr)
    rebuilt = (parts["pml4"] << 39) | (parts["pdpt"] << 30) | (parts["pd"] << 21) | (parts["pt"] << 12) \
        | parts["offset"]
    assert rebuilt == vaddr
    assert all(0 <= parts[k] < 512 for k in ("pml4", "pdpt", "pd", "pt"))


def test_level_shifts_and_page_sizes():
    """SDM 4.5: each level translates 9 bits; a PDPTE maps 1 GiB, a PDE 2 MiB, a PTE 4 KiB."""
    assert [lv.shift for lv in (Level.PT, Level.PD, Level.PDPT, Level.PML4)] == [12, 21, 30, 39]
    assert [ps.bytes for ps in PageSize] == [4 << 10, 2 << 20, 1 << 30]
    assert [ps.leaf_level for ps in PageSize] == [Level.PT, Level.PD, Level.PDPT]


def test_error_code_bits_sdm_figure_4_12():
    """SDM 4.7 figure 4-12: P=bit 0, W/R=bit 1, U/S=bit 2, RSVD=bit 3, I/D=bit 4."""
    assert (pte.PF_P, pte.PF_WR, pte.PF_US, pte.PF_RSVD, pte.PF_ID) == (1, 2, 4, 8, 16)


# --- reserved bits (SDM 4.5, tables 4-15..4-20) -----------------------------------

ALL_LEVELS = [(Level.PML4, False), (Level.PDPT, False), (Level.PDPT, True), (Level.PD, False), (Level.PD, True),
              (Level.PT, True)]


@pytest.mark.parametrize("level,leaf", ALL_LEVELS)
@pytest.mark.parametrize("m", [32, 36, 40, 46, 52])
def test_bits_m_to_51_are_reserved_at_every_level(level, leaf, m):
    """SDM tables 4-15..4-20: bits 51:M of every entry are reserved (must be 0)."""
    mask = reserved_mask(level, leaf, m, nxe=True)
    for bit in range(12, 64):
        if m <= bit <= 51:
            assert mask >> bit & 1, bit
    assert not mask & ((1 << m) - 1) & ~((1 << 30) - 1)  # address bits below M (and >= 30) are never reserved


@pytest.mark.parametrize("level,leaf", ALL_LEVELS)
def test_xd_is_reserved_only_without_nxe(level, leaf):
    """SDM 4.5: if IA32_EFER.NXE = 0, bit 63 (XD) is reserved in every entry."""
    assert reserved_mask(level, leaf, 40, nxe=False) & pte.XD
    assert not reserved_mask(level, leaf, 40, nxe=True) & pte.XD


@pytest.mark.parametrize("level,leaf", ALL_LEVELS)
def test_ps_is_reserved_only_in_a_pml4e(level, leaf):
    """SDM table 4-15: bit 7 of a PML4E is reserved; in a PDPTE/PDE it is PS and in a PTE it is PAT."""
    assert bool(reserved_mask(level, leaf, 40, True) & pte.PS) == (level == Level.PML4)


def test_huge_leaves_reserve_the_low_address_bits_but_not_pat():
    """SDM tables 4-17 and 4-18: a 1 GiB leaf reserves 29:13, a 2 MiB leaf 20:13; bit 12 is PAT."""
    m1g = reserved_mask(Level.PDPT, True, 40, True)
    m2m = reserved_mask(Level.PD, True, 40, True)
    assert all(m1g >> b & 1 for b in range(13, 30)) and not m1g >> 12 & 1 and not m1g >> 30 & 1
    assert all(m2m >> b & 1 for b in range(13, 21)) and not m2m >> 12 & 1 and not m2m >> 21 & 1


@pytest.mark.parametrize("level,leaf", ALL_LEVELS)
def test_flags_and_ignored_bits_are_never_reserved(level, leaf):
    """SDM tables 4-15..4-20: bits 0-6, 8-11 and 52-62 (no protection keys) are never reserved."""
    mask = reserved_mask(level, leaf, 40, nxe=False)
    for bit in list(range(0, 7)) + list(range(8, 12)) + list(range(52, 63)):
        assert not mask >> bit & 1, bit
