"""`mmu sweep`: LRU stack distances against the reference TLB, the cycle model against the hardware, the command."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.main import main
from model.config import DRAMTiming, MMUConfig, Policy, TLBConfig
from model.reference.ref_mmu import RefMMU
from model.x86.pte import Access
from replay.lackey import SHIPPED_TRACE, Trace, read_lackey
from replay.stack_distance import COLD, count_smaller_before, lru_hits, stack_distances
from replay.sweep import CycleModel, LRUStack, Point, itlb_miss_positions, replay_walks, sweep
from replay.trace_replay import AddressSpace, replay
from sim.pysim import time_translations

ROOT = Path(__file__).resolve().parents[1]
REAL_TRACE = SHIPPED_TRACE
R, W, F = Access.READ, Access.WRITE, Access.FETCH
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def lru_dtlb(entries: int) -> TLBConfig:
    """A fully associative LRU DTLB of any size.  TLBConfig refuses LRU beyond 16 ways because of what an
    age matrix costs in hardware; the reference TLB has no such limit, and the stack distances claim every size."""
    t = object.__new__(TLBConfig)
    for name, value in (("entries", entries), ("ways", entries), ("policy", Policy.LRU), ("superpage_entries", 4)):
        object.__setattr__(t, name, value)
    return t


def naive_stack_distances(keys) -> list[int]:
    """The definition: depth in the LRU stack (most recently used first), COLD for a first use."""
    stack, out = [], []
    for key in keys:
        out.append(stack.index(key) if key in stack else COLD)
        if key in stack:
            stack.remove(key)
        stack.insert(0, key)
    return out


# --- stack distances, by hand and by definition ------------------------------------------

def test_stack_distance_hand_worked():
    A, B, C = 1, 2, 3
    # The second A has B and C between it and the first: two distinct pages, distance 2.
    assert stack_distances(np.array([A, B, C, A])).tolist() == [COLD, COLD, COLD, 2]
    # A repeat is distance 0; repeats of B do not count twice.
    assert stack_distances(np.array([A, A, B, B, B, A])).tolist() == [COLD, 0, COLD, 0, 0, 1]
    # A B C B A: the second B has only C in between (1); the second A has B and C (2), however often B came.
    assert stack_distances(np.array([A, B, C, B, A])).tolist() == [COLD, COLD, COLD, 1, 2]
    # Fully associative LRU of S entries hits exactly the distances < S.
    d = stack_distances(np.array([A, B, C, B, A, A]))
    assert lru_hits(d, [1, 2, 3, 4]).tolist() == [1, 2, 3, 3]


def test_count_smaller_before_hand_worked():
    # 3: nothing before; 1: nothing smaller; 2: 1; 0: none; 5: 3, 1, 2, 0; 2: 1, 0 (not the equal 2).
    assert count_smaller_before(np.array([3, 1, 2, 0, 5, 2])).tolist() == [0, 0, 1, 0, 4, 2]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=200))
def test_count_smaller_before_is_the_definition(values):
    a = np.array(values, np.int64)
    expect = [sum(a[j] < a[k] for j in range(k)) for k in range(len(a))]
    assert count_smaller_before(a).tolist() == expect


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 12), max_size=200))
def test_stack_distances_are_lru_stack_depths(keys):
    assert stack_distances(np.array(keys, np.uint64)).tolist() == naive_stack_distances(keys)


# --- stack distances predict the reference TLB exactly --------------------------------------

_PAGES = ([0x400000 + (i << 12) for i in range(12)] + [0x7FFF_FFF0_0000 + (i << 12) for i in range(6)]
          + [0x1FFF_0000_0000 + (i << 21) for i in range(4)] + [0xFFFF_8000_0000_0000, 0x8000_0000_0000])


@st.composite
def traces(draw):
    """Runs over 23 canonical pages in several PML4/PDPT/PD regions and one non-canonical address."""
    runs = draw(st.lists(st.tuples(st.integers(0, len(_PAGES) - 1), st.sampled_from([R, R, W, F]),
                                   st.integers(1, 3), st.integers(0, 4095)), min_size=1, max_size=120))
    vaddr, access = [], []
    for page, acc, repeat, offset in runs:
        for _ in range(repeat):
            vaddr.append(_PAGES[page] + offset)
            access.append(acc if acc == F else draw(st.sampled_from([acc, R, W])))
    return Trace.from_arrays(vaddr, access)


SIZES = [1, 2, 4, 8, 16, 32]


def lru_config(entries: int, pwc: int = 8) -> MMUConfig:
    return MMUConfig(itlb=TLBConfig(4, 2, Policy.PLRU), dtlb=lru_dtlb(entries), pwc_entries=pwc)


@settings(max_examples=80, deadline=None)
@given(t=traces())
def test_stack_distance_misses_equal_the_replay_for_every_lru_size(t):
    predicted = LRUStack(t).misses(SIZES)
    replayed = [replay(t, lru_config(n)).dtlb_misses for n in SIZES]
    assert predicted.tolist() == replayed


@settings(max_examples=60, deadline=None)
@given(t=traces(), entries=st.sampled_from(SIZES), pwc=st.sampled_from([0, 2, 8]))
def test_stack_distance_rows_equal_the_replay(t, entries, pwc):
    # The whole row: the ITLB's misses replayed alone, the DTLB's from the distances, and the walks of
    # both replayed without TLBs give exactly what the full replay gives.
    cfg = lru_config(entries, pwc)
    (row,) = sweep(t, cfg, [Point(entries, entries, Policy.LRU, pwc)]).rows
    r = replay(t, cfg)
    assert (row.itlb_misses, row.dtlb_misses, row.walks, row.dram_reads, row.dram_writes) == \
        (r.itlb_misses, r.dtlb_misses, r.walks, r.dram_reads, r.counters["mem_writes"])
    assert row.walk_shapes == r.walk_shapes


def test_d_bit_rule_by_hand():
    # 2-entry LRU DTLB.  R A: cold miss.  W A: A is resident but its entry is clean: the first write to A
    # walks again (a miss) to set D.  R B, R C: cold.  R A: distance 2, evicted, miss; the walk finds D set,
    # so the new entry is dirty and the last W A hits.
    a, b, c = 0x400000, 0x401000, 0x402000
    t = Trace.from_arrays([a, a, b, c, a, a], [R, W, R, R, R, W])
    lru = LRUStack(t)
    assert lru.distance.tolist() == [COLD, 0, COLD, COLD, 2, 0]
    assert lru.first_write.tolist() == [False, True, False, False, False, False]
    assert lru.miss_mask(2).tolist() == [True, True, True, True, True, False]
    assert lru.misses([2]).tolist() == [5] == [replay(t, lru_config(2)).dtlb_misses]


def test_lru_hits_are_nested_in_size_the_inclusion_property():
    # LRU is a stack algorithm: whatever hits a smaller fully associative LRU TLB hits every larger one,
    # so the hit rate never falls as the TLB grows.  Checked on the reference TLB itself, access by access.
    t = read_lackey(REAL_TRACE)
    part = Trace.from_arrays(t.vaddr[60_000:120_000], t.access[60_000:120_000])  # the loader: many pages
    hits = []
    for n in [1, 2, 4, 8, 16, 32, 64]:
        cfg = lru_config(n)
        space = AddressSpace.for_trace(part, cfg)
        mmu = RefMMU(cfg, space.mem, space.ctrl)
        hits.append(np.array([mmu.translate(v, Access(a), True).tlb_hit
                              for v, a in zip(part.vaddr.tolist(), part.access.tolist()) if a != F]))
    for small, large in zip(hits, hits[1:]):
        assert not (small & ~large).any()
        assert small.sum() <= large.sum()
    assert hits[0].sum() < hits[-1].sum()


def test_stack_distances_on_the_real_trace_equal_the_replay_for_every_size():
    t = read_lackey(REAL_TRACE)
    lru = LRUStack(t)
    sizes = [1 << i for i in range(10)]  # up to 512: beyond the trace's 427 pages
    misses = lru.misses(sizes)
    assert misses.tolist() == [replay(t, lru_config(n)).dtlb_misses for n in sizes]
    assert (np.diff(misses) <= 0).all()
    # Beyond every page, only the cold misses and the first writes are left.
    assert misses[-1] == (lru.distance == COLD).sum() + (lru.first_write & (lru.distance != COLD)).sum()


@pytest.mark.parametrize("entries, pwc", [(8, 0), (64, 8)])
def test_stack_distance_rows_equal_the_replay_on_the_real_trace(entries, pwc):
    t = read_lackey(REAL_TRACE)
    cfg = MMUConfig(dtlb=lru_dtlb(entries), pwc_entries=pwc)
    (row,) = sweep(t, cfg, [Point(entries, entries, Policy.LRU, pwc)]).rows
    r = replay(t, cfg)
    assert (row.itlb_misses, row.dtlb_misses, row.walks, row.dram_reads, row.dram_writes) == \
        (r.itlb_misses, r.dtlb_misses, r.walks, r.dram_reads, r.counters["mem_writes"])
    assert row.walk_shapes == r.walk_shapes and row.method == "stack distance"


def test_itlb_misses_do_not_depend_on_the_dtlb():
    t = read_lackey(REAL_TRACE)
    cfg = MMUConfig()
    n = len(itlb_miss_positions(t, cfg))
    assert n == replay(t, cfg).itlb_misses == replay(t, cfg.replace(dtlb=TLBConfig(8, 1), pwc_entries=0)).itlb_misses


def test_walk_replay_of_every_access_is_the_unfolded_replay_with_no_hits():
    # Walking every lookup is what a TLB that never hits would do.
    t = read_lackey(REAL_TRACE)
    part = Trace.from_arrays(t.vaddr[:5_000], t.access[:5_000])
    shapes = replay_walks(part, MMUConfig(), np.arange(len(part)))
    assert sum(shapes.values()) == len(part)
    assert sum(r * n for (r, _), n in shapes.items()) >= len(part)


# --- the cycle model against the Amaranth design -----------------------------------------------

@pytest.mark.parametrize("latency, pwc", [(3, 8), (7, 0), (0, 8)])
def test_cycle_model_matches_the_hardware(latency, pwc):
    # Hits, cold walks, PWC hits at different depths, a D-bit rewalk, and a walk with no A/D write
    # (page 0x400000 again after the 1-entry DTLB lost it).
    vaddr = [0x400000, 0x401000, 0x400000, 0x400000, 0x400008, 0x7FFF_0000, 0x4000_0000, 0x400000, 0x401000]
    access = [R, R, R, W, W, R, F, R, F]
    t = Trace.from_arrays(vaddr, access)
    cfg = MMUConfig(dtlb=TLBConfig(1, 1), pwc_entries=pwc, dram=DRAMTiming(latency=latency))
    space = AddressSpace.for_trace(t, cfg)
    timed, counters = time_translations(cfg, space.mem, space.ctrl, [(v, a, True) for v, a in zip(vaddr, access)])
    ref = RefMMU(cfg, space.mem, space.ctrl)
    model = CycleModel.for_config(cfg)
    shapes = Counter()
    for v, a, hw in zip(vaddr, access, timed):
        r = ref.translate(v, Access(a), True)
        assert hw.tlb_hit == r.tlb_hit
        if r.tlb_hit:
            assert hw.cycles == model.HIT
        else:
            shapes[len(r.walk.reads), len(r.walk.writes)] += 1
            assert hw.cycles == model.miss(len(r.walk.reads), len(r.walk.writes)), (hex(v), a)
    assert len(shapes) >= (3 if pwc else 2) and sum(shapes.values()) < len(vaddr)
    assert model.total(len(vaddr), shapes) == sum(hw.cycles for hw in timed)
    assert counters["walk_cycles"] == sum(n * (model.miss(r, w) - 2) for (r, w), n in shapes.items())


# --- the command ---------------------------------------------------------------------------

def test_sweep_writes_valid_pngs_and_json(tmp_path, capsys):
    out = tmp_path / "plots"
    code = main(["sweep", str(REAL_TRACE), "--entries", "8,32", "--ways", "2,full", "--policy", "lru,fifo",
                 "--pwc", "0,8", "--out", str(out), "--json", "--quiet"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == ["hit_rate.png", "miss_latency.png", "pwc.png"]
    for p in out.iterdir():
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 10_000
    assert data["plots"] == [str(out / name) for name in ("hit_rate.png", "miss_latency.png", "pwc.png")]
    rows = data["rows"]
    assert len(rows) == 2 * 2 * 2 * 2
    by = {(r["entries"], r["ways"], r["policy"], r["pwc"]): r for r in rows}
    assert by[32, 32, "lru", 8]["method"] == "stack distance" and not by[32, 32, "lru", 8]["buildable"]
    assert by[8, 8, "lru", 8]["buildable"] and by[8, 2, "lru", 8]["method"] == "replay"
    # The DTLB's hits do not depend on the page-walk cache; the ITLB's on nothing that varies.
    for (n, w, policy, pwc), r in by.items():
        assert r["dtlb_misses"] == by[n, w, policy, 0]["dtlb_misses"]
        assert r["itlb_misses"] == rows[0]["itlb_misses"]
        assert sum(r["miss_latency"].values()) == r["walks"]
    # Without the page-walk cache every walk reads four entries.
    assert {r["reads_per_walk"] for r in rows if r["pwc"] == 0} == {4.0}
    assert by[8, 8, "lru", 8]["cycles_per_translation"] < by[8, 8, "lru", 0]["cycles_per_translation"]
    # From docs/traces.md: 8 entries fully associative LRU, PWC 8: 6,567 walks and 6,576 DRAM reads.
    assert (by[8, 8, "lru", 8]["walks"], by[8, 8, "lru", 8]["dram_reads"]) == (6567, 6576)


def test_sweep_table_and_default_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(REAL_TRACE), "--entries", "16", "--ways", "full", "--policy", "lru,plru",
                 "--pwc", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "sweep-listwalk" / "hit_rate.png").read_bytes()[:8] == PNG_MAGIC
    lines = out.splitlines()
    assert lines[0].startswith("trace") and "ITLB" in lines[1] and "3 + 5 x DRAM reads" in lines[2]
    lru = next(line for line in lines if line.split()[:3] == ["16", "full", "lru"])
    assert lru.split()[3] == "8" and lru.endswith("stack distance")
    assert "96.99%" in lru  # 5,616 misses of 186,748 data lookups (docs/traces.md)


@pytest.mark.parametrize("argv, message", [
    (["--entries", "8,12"], "--entries 12: TLB entries are powers of two (1, 2, 4, ...)"),
    (["--entries", "8,,16"], "--entries '8,,16': a comma-separated list with no empty items"),
    (["--entries", "8,8"], "--entries '8,8': 8 is listed twice; list each value once"),
    (["--ways", "3"], "--ways 3: ways are powers of two, or 'full' (fully associative)"),
    (["--ways", "16", "--entries", "8"], "--entries 8 --ways 16 --policy lru: ways=16: must be a power of two "
                                         "no larger than entries=8"),
    (["--ways", "32", "--entries", "64"], "--entries 64 --ways 32 --policy lru: ways=32 with policy lru: LRU is "
                                          "for at most 16 ways; use plru"),
    (["--policy", "lru,mru"], "--policy mru: policies are lru, plru, fifo, random"),
    (["--pwc", "0,6"], "--pwc 6: page-walk-cache sizes are 0 (off) or powers of two"),
])
def test_user_errors(argv, message, capsys):
    assert main(["sweep", str(REAL_TRACE), "--policy", "lru", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"mmu: error: {message}\n"


def test_user_error_exits_2_with_one_line_and_no_traceback(tmp_path):
    config = tmp_path / "ddr.json"
    config.write_text(json.dumps({"dram": {"kind": "ddr"}}))
    for argv in (["--entries", "12"], ["--config", str(config)]):
        p = subprocess.run([sys.executable, "-m", "cli.main", "sweep", str(REAL_TRACE), *argv, "--out", str(tmp_path)],
                           capture_output=True, text=True, cwd=ROOT)
        assert p.returncode == 2 and p.stdout == ""
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("mmu: error: ")
    assert "needs a fixed DRAM latency" in p.stderr
    assert not list(tmp_path.glob("*.png"))


def test_out_that_is_a_file_is_a_user_error(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    assert main(["sweep", str(REAL_TRACE), "--out", str(tmp_path / "taken"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"mmu: error: --out {tmp_path / 'taken'}: cannot create the directory: " \
                                      "File exists\n"
