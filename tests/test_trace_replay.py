"""Trace replay through the reference MMU: hand-worked TLB behaviour, folding exactness, the real trace, `mmu trace`."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trace_strategies
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.main import main
from model.config import MMUConfig, Policy, TLBConfig
from model.errors import UserError
from model.mm.page_alloc import BuddyAllocator
from model.reference.ref_mmu import RefMMU
from model.x86.physmem import PhysMem
from model.x86.pte import Access
from replay.lackey import SHIPPED_TRACE, Trace, parse_lackey, read_lackey
from replay.trace_replay import RESULT_KEYS, AddressSpace, fold_mask, replay

ROOT = Path(__file__).resolve().parents[1]
REAL_TRACE = SHIPPED_TRACE
R, W, F = Access.READ, Access.WRITE, Access.FETCH


def cfg(entries=4, ways=4, policy="lru", pwc=8, itlb=(4, 4)) -> MMUConfig:
    return MMUConfig(itlb=TLBConfig(itlb[0], itlb[1], Policy(policy)), dtlb=TLBConfig(entries, ways, Policy(policy)),
                     pwc_entries=pwc)


def reads(pages, base=0x10000000) -> str:
    return "".join(f" L {base + (p << 12):x},8\n" for p in pages)


def run(text: str, config: MMUConfig) -> dict:
    return replay(parse_lackey(text), config).to_json()


# --- hand-worked TLB behaviour ------------------------------------------------------

def test_five_pages_cycling_through_four_entry_lru_dtlb_all_miss():
    # LRU evicts exactly the page that comes back next, so all 15 accesses miss.  The first
    # walk reads PML4E, PDPTE, PDE, PTE; the PWC then holds the PDE of this 2 MiB region and
    # every later walk reads the PTE alone: 4 + 14 reads.
    r = run(reads([0, 1, 2, 3, 4] * 3), cfg())
    assert r == {"accesses": 15, "itlb_misses": 0, "dtlb_misses": 15, "walks": 15, "dram_reads": 18,
                 "faults": 0, "cycles": None}
    assert run(reads([0, 1, 2, 3, 4] * 3), cfg(pwc=0))["dram_reads"] == 15 * 4


def test_four_pages_cycling_fit():
    r = run(reads([0, 1, 2, 3] * 3), cfg())
    assert (r["dtlb_misses"], r["walks"], r["dram_reads"]) == (4, 4, 4 + 3)


@pytest.mark.parametrize("policy, misses", [("lru", 5), ("plru", 5), ("fifo", 6)])
def test_policies_differ_on_a_reuse(policy, misses):
    # A B C D fill the four ways; A hits; E must evict.  LRU evicts B (A was just used);
    # tree-PLRU, after touching w0..w3 then w0, points at w2 (C); FIFO's pointer, which
    # invalid-way fills never moved, is still at w0, so it evicts A, and A misses again.
    assert run(reads([0, 1, 2, 3, 0, 4, 0]), cfg(policy=policy))["dtlb_misses"] == misses


def test_set_conflicts_in_a_two_way_dtlb():
    # 4 entries, 2 ways: 2 sets indexed by VPN bit 0.  Pages 0, 2, 4 share set 0 and thrash
    # a 2-way LRU set; pages 0, 1, 2 spread over both sets and fit.
    assert run(reads([0, 2, 4] * 3), cfg(ways=2))["dtlb_misses"] == 9
    assert run(reads([0, 1, 2] * 3), cfg(ways=2))["dtlb_misses"] == 3


def test_write_to_a_clean_entry_walks_again_to_set_d():
    text = " L 10000000,8\n S 10000000,8\n S 10000008,8\n L 10000010,8\n"
    t = parse_lackey(text)
    r = replay(t, cfg())
    # read: miss, 4 reads, A written; first write: the entry is clean, so it walks again
    # (PWC: 1 read) and writes D; then a dirty hit and a read hit.
    assert (r.dtlb_misses, r.walks, r.dram_reads, r.counters["mem_writes"]) == (2, 2, 5, 2)


def test_modify_on_a_fresh_page_is_a_read_miss_and_a_d_bit_rewalk():
    assert run(" M 10000000,8\n", cfg())["dtlb_misses"] == 2


def test_fetch_and_data_use_separate_tlbs_and_share_the_pwc():
    r = run("I  10000000,4\n L 10000000,8\nI  10000004,4\n L 10000008,8\n", cfg())
    assert (r["itlb_misses"], r["dtlb_misses"], r["walks"], r["dram_reads"]) == (1, 1, 2, 4 + 1)


def test_page_crossing_access_looks_up_both_pages():
    r = run(" L 10000ffc,8\n", cfg())
    assert (r["accesses"], r["dtlb_misses"]) == (2, 2)


def test_noncanonical_address_faults_without_a_walk():
    r = run(" L 10000000,8\n L 800000000000,8\n L 10000000,8\n", cfg())
    assert (r["accesses"], r["faults"], r["walks"], r["dtlb_misses"]) == (3, 1, 1, 1)


def test_address_space_maps_every_touched_canonical_page_with_full_rights():
    t = parse_lackey(" L 7000,1\n L 3000,1\n L ffff800000001000,1\n L 7008,1\n L 800000000000,1\n")
    space = AddressSpace.for_trace(t, MMUConfig())
    leaves = {leaf.va: leaf for leaf in space.tables.leaves()}
    assert sorted(leaves) == [0x3000, 0x7000, 0xFFFF800000001000]
    assert len({leaf.pa for leaf in leaves.values()}) == 3
    # The zone holds exactly the data pages and the page-table pages (PML4, 2 PDPTs, 2 PDs, 2 PTs).
    assert space.tables.table_pages == 7 and space.allocator.nr_free_pages == 0
    assert all(leaf.writable and leaf.user and not leaf.nx and not leaf.accessed for leaf in leaves.values())


def test_address_space_in_a_given_memory_and_zone():
    # A co-simulation maps the trace into the memory its DRAM model serves.
    t = parse_lackey(" L 7000,1\n S 3000,1\n")
    mem, zone = PhysMem(1 << 32), BuddyAllocator((16 << 20) >> 12, 16)
    space = AddressSpace.for_trace(t, MMUConfig(), mem, zone)
    assert space.mem is mem and zone.nr_free_pages == 16 - 2 - 4
    mmu = RefMMU(MMUConfig(), mem, space.ctrl)
    paddr = mmu.translate(0x7008, Access.READ, True).paddr
    assert 16 << 20 <= paddr < (16 << 20) + 16 * 4096 and paddr & 0xFFF == 8
    with pytest.raises(UserError, match="need more than the 1 free pages"):
        AddressSpace.for_trace(t, MMUConfig(), mem, BuddyAllocator(1 << 12, 1))


# --- folding -------------------------------------------------------------------------

def test_fold_mask_keeps_run_starts_and_first_writes_per_stream():
    a, b = 0x1000, 0x5000
    vaddr = np.array([a, b, a + 8, b + 8, b, a, b, b, a + 0x1000, b], np.uint64)
    access = np.array([F, R, F, R, W, F, W, R, F, R], np.uint8)
    # fetch stream: a a a (a+0x1000): keep the first a and the new page.  Data stream:
    # b(R) b(R) b(W) b(W) b(R) b(R): keep the first read and the first write only.
    assert fold_mask(vaddr, access).tolist() == [1, 1, 0, 0, 1, 0, 0, 0, 1, 0]


def test_fold_mask_chains_are_per_tlb_set():
    # Pages 0 and 1 alternate.  In a fully associative DTLB each access follows the other
    # page, so all are kept; with two sets, page 0 and page 1 each have a chain of their own.
    vaddr = np.array([0x0, 0x1000, 0x8, 0x1008, 0x10, 0x2000, 0x18], np.uint64)
    access = np.full(7, R, np.uint8)
    assert fold_mask(vaddr, access).tolist() == [1] * 7
    assert fold_mask(vaddr, access, dtlb_sets=2).tolist() == [1, 1, 0, 0, 0, 1, 1]
    assert fold_mask(vaddr, access, itlb_sets=2).tolist() == [1] * 7


_PAGES = [0x400000, 0x401000, 0x402000, 0x403000, 0x800000, 0x7FFF0000000, 0x1FFF000000, 0xFFFF800000000000,
          0x800000000000]  # the last is non-canonical


def traces():
    return trace_strategies.traces(_PAGES, max_repeat=4, max_runs=60)


@pytest.mark.parametrize("policy", [p.value for p in Policy])
@settings(max_examples=120, deadline=None)
@given(t=traces(), geometry=st.sampled_from([(4, 2, 2, 2), (2, 2, 4, 1), (4, 4, 4, 2), (8, 2, 2, 1), (8, 1, 1, 1)]),
       pwc=st.sampled_from([0, 2, 8]))
def test_folding_is_exact(policy, t, geometry, pwc):
    entries, ways, itlb_entries, itlb_ways = geometry  # from fully associative to direct-mapped
    config = cfg(entries, ways, policy, pwc, itlb=(itlb_entries, itlb_ways))
    folded, full = replay(t, config, fold=True), replay(t, config, fold=False)
    assert folded.to_json() == full.to_json()
    assert folded.counters == full.counters
    assert full.replayed == len(t)


@pytest.mark.parametrize("policy", [p.value for p in Policy])
def test_folding_is_exact_on_the_real_trace(policy):
    t = read_lackey(REAL_TRACE)
    part = Trace.from_arrays(t.vaddr[300_000:400_000], t.access[300_000:400_000])
    config = cfg(16, 4, policy, 4, itlb=(8, 2))
    folded, full = replay(part, config, fold=True), replay(part, config, fold=False)
    assert folded.replayed < len(part) // 4
    assert folded.to_json() == full.to_json() and folded.counters == full.counters


# --- the checked-in real trace ---------------------------------------------------------

def test_real_trace_is_small_and_parses_like_a_plain_reader():
    assert REAL_TRACE.stat().st_size < 2 << 20
    expect_v, expect_a, records = [], [], 0
    for line in gzip.open(REAL_TRACE, "rt"):
        if line.startswith("=="):
            continue
        records += 1
        kind, rest = line[:3].strip(), line[3:]
        addr, size = rest.split(",")
        addr, size = int(addr, 16), int(size)
        pages = [addr] if addr >> 12 == (addr + size - 1) >> 12 else [addr, ((addr >> 12) + 1) << 12]
        for op in {"I": [F], "L": [R], "S": [W], "M": [R, W]}[kind]:
            expect_v += pages
            expect_a += [op] * len(pages)
    t = read_lackey(REAL_TRACE)
    assert t.records == records > 100_000
    assert t.vaddr.tolist() == expect_v and t.access.tolist() == expect_a


def test_real_trace_replays_without_faults():
    t = read_lackey(REAL_TRACE)
    r = replay(t, MMUConfig())
    assert r.faults == 0
    assert r.accesses == len(t)
    assert r.itlb_misses > 0 and r.dtlb_misses > 0
    assert r.walks == r.itlb_misses + r.dtlb_misses
    assert r.dram_reads >= r.walks


# --- the command ---------------------------------------------------------------------

def test_mmu_trace_json_has_exactly_the_documented_keys(tmp_path, capsys):
    path = tmp_path / "cycle.trace"
    path.write_text(reads([0, 1, 2, 3, 4] * 3))
    code = main(["trace", str(path), "--json", "--dtlb-entries", "4", "--dtlb-ways", "4", "--policy", "lru",
                 "--pwc", "0"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert tuple(out) == RESULT_KEYS
    assert out == {"accesses": 15, "itlb_misses": 0, "dtlb_misses": 15, "walks": 15, "dram_reads": 60,
                   "faults": 0, "cycles": None}


def test_mmu_trace_prints_a_table(capsys):
    assert main(["trace", str(REAL_TRACE)]) == 0
    out = capsys.readouterr().out
    for word in ("ITLB", "DTLB", "walks", "DRAM", "faults    0", "not simulated"):
        assert word in out


def test_mmu_trace_malformed_line_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.trace"
    path.write_text("==1== Lackey\nI  1000,4\n L 10zz,8\n")
    p = subprocess.run([sys.executable, "-m", "cli.main", "trace", str(path)], capture_output=True, text=True,
                       cwd=ROOT)
    assert p.returncode == 2
    assert p.stderr == f"mmu: error: {path}:3: the address is 1 to 16 hex digits: ' L 10zz,8'\n"
    assert p.stdout == ""


def test_mmu_trace_takes_any_lru_geometry_and_hw_refuses_what_hardware_cannot_build(capsys):
    # 64-way LRU is beyond the hardware (model/config.py MAX_LRU_WAYS) but not beyond the reference model.
    argv = ["trace", str(REAL_TRACE), "--dtlb-entries", "64", "--dtlb-ways", "64", "--policy", "lru", "--quiet"]
    assert main(argv + ["--json"]) == 0
    lru64 = TLBConfig(64, 64, Policy.LRU, model_only=True)
    expected = replay(read_lackey(REAL_TRACE), MMUConfig(itlb=TLBConfig(16, 16, Policy.LRU), dtlb=lru64)).to_json()
    assert json.loads(capsys.readouterr().out) == expected
    assert main(argv + ["--hw"]) == 2
    assert capsys.readouterr().err == ("mmu: error: ways=64 with policy lru: LRU is for at most 16 ways in hardware; "
                                       "use plru (the reference model and `mmu trace` take any)\n")
