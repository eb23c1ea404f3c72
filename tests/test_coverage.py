"""The coverage model (sim/coverage.py): its bins and exclusions against the contract, the events the
covered reference MMU counts (outcomes only once they are seen), the arrival states, and the gate."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from cli.cmd_sim import coverage_gate
from model.config import PRESETS, MMUConfig
from model.mm.page_alloc import BuddyAllocator
from model.reference.ref_walker import ControlRegs
from model.x86.pgtable import PageTables
from model.x86.physmem import PhysMem
from model.x86.pte import PS, XD, Access, Level, PageSize
from model.x86.tlbflush import CR3_NOFLUSH, CtlOp
from sim import coverage as C

CFG = MMUConfig()


def _group(name):
    return next(g for g in C.GROUPS if g.name == name)


def test_bins_per_group_follow_the_contract():
    # response: ok 3 sizes x 3 accesses x 2 modes x hit/miss; protection by size; not present and reserved
    # by level; non-canonical: 36 + 18 + 24 + 24 + 6, nothing excluded
    assert len(_group("response").reachable()) == 108 and not _group("response").rules
    # flush, per size: no-flush CR3 keeps all 4 classes, flush-all drops all 4, keep-global 2 + 2,
    # flush-by-PCID global same/other kept + non-global same dropped + other kept, flushing CR3 those 4 and
    # non-global other dropped (PCIDE=0), flush-by-VA global same/other + non-global same dropped, other kept
    assert len(_group("flush").reachable()) == 3 * (4 + 4 + 4 + 4 + 5 + 4)
    assert len(_group("reserved").reachable()) == 4 + 4 + 1 + 1 + 1
    assert len(_group("blocked").reachable()) == 3 * 3  # dirty, R/W, U/S per size; NX cannot be in an ITLB entry
    assert len(_group("arrival").reachable()) == 6 * 7 - 5 - 2
    assert len(_group("cr3").reachable()) == 3 * (2 * 2 + 1)  # global: both writes x this/other; else no-flush, this
    # default: ITLB fully associative LRU (16 ways, 4 superpages), DTLB 4-way PLRU (4 superpages)
    assert len(C.victim_group([CFG]).reachable()) == 16 + 4 + 4 + 4
    for g in C.GROUPS:
        excluded = Counter(g.exclusion(v) for v in g.all_bins())
        assert all(excluded[reason] for reason, _ in g.rules), f"{g.name}: every rule excludes something"
    assert "flush-all drops every entry" in _group("flush").exclusion(("FLUSH_ALL", "4K", "global", "same", "kept"))
    assert _group("flush").exclusion(("FLUSH_VA", "2M", "nonglobal", "other", "kept")) is None
    assert "another PCID" in _group("flush").exclusion(("FLUSH_VA", "1G", "nonglobal", "other", "dropped"))


def _world():
    mem = PhysMem(1 << 32)
    pt = PageTables(mem, BuddyAllocator(0x1000, 4096), CFG.maxphyaddr)
    return mem, pt


def test_flush_outcomes_count_only_once_seen():
    mem, pt = _world()
    pt.map(0x4000, 0x0800_0000)
    pt.map(0x4000_0000, 0x4000_0000, PageSize.SIZE_1G)
    bins = Counter()
    mmu = C.CoveredRefMMU(CFG, mem, ControlRegs(cr3=pt.pml4 | 1, pcide=True), bins=bins)
    mmu.translate(0x4000_0000 + (700 << 20), Access.READ, True)  # 1 GiB entry, PCID 1
    mmu.write_cr3(pt.pml4 | 2, noflush=True)
    mmu.translate(0x4008, Access.READ, True)  # 4 KiB entry, PCID 2
    mmu.invlpg(0x4000_0000)  # covers PCID 1's 1 GiB entry: kept (another PCID)
    mmu.invlpg(0x4000)  # PCID 2's own 4 KiB entry: dropped
    assert not [k for k in bins if k.startswith("flush")], "nothing is seen yet"
    mmu.translate(0x4010, Access.READ, True)  # misses: the drop is seen
    assert bins["flush: FLUSH_VA 4K nonglobal same dropped"] == 1
    mmu.write_cr3(pt.pml4 | 1, noflush=True)
    r = mmu.translate(0x4000_0000 + (900 << 20), Access.READ, True)  # hits: the keep is seen
    assert r.tlb_hit and bins["flush: FLUSH_VA 1G nonglobal other kept"] == 1
    assert bins["cr3: noflush nonglobal this 1G"] == 1  # filled before the last CR3 write, hit after it
    assert bins["response: ok 1G read user hit"] == 1


def test_blocked_reserved_and_victim_bins():
    mem, pt = _world()
    pt.map(0x20_0000, 0x0A00_0000, PageSize.SIZE_2M, dirty=False)
    pt.set_entry(0x7000_0000_0000, Level.PML4, 0x3000 | 1 | PS | (1 << CFG.maxphyaddr))
    pt.set_entry(0x6000_0000_0000, Level.PT, 0x5000 | 1 | XD)
    bins = Counter()
    mmu = C.CoveredRefMMU(CFG, mem, ControlRegs(cr3=pt.pml4, nxe=False), bins=bins)
    mmu.translate(0x20_1000, Access.READ, False)
    mmu.translate(0x20_2000, Access.WRITE, False)  # the clean entry cannot take a write: re-walk
    assert bins["blocked: dirty 2M"] == 1
    mmu.translate(0x7000_0000_0000, Access.READ, False)
    assert bins["reserved: high PML4"] == bins["reserved: ps PML4"] == 1
    mmu.translate(0x6000_0000_0000, Access.READ, False)
    assert bins["reserved: xd PT"] == 1
    for i in range(6):  # five 4 KiB pages in one DTLB set (8 sets, 4 ways): the fifth replaces a way
        pt.map(0x10_0000 + i * 8 * 0x1000, 0x0900_0000 + i * 0x1000)
        mmu.translate(0x10_0000 + i * 8 * 0x1000, Access.READ, False)
    assert sum(v for k, v in bins.items() if k.startswith("victim: plru main")) == 2


def test_arrival_states_from_the_bus_cycles():
    op = lambda c, done=-1: SimpleNamespace(cycle=c, done=done)  # noqa: E731
    req = SimpleNamespace(accept_cycle=10)
    miss = SimpleNamespace(fault=1, tlb_hit=False)
    reads = [op(12, 16), op(17, 21)]  # READ 12, WAIT 13..16, READ 17, WAIT 18..21
    writes = [op(22), op(23)]  # A/D writes 22..23, DONE 24, then RESP
    ctl = [SimpleNamespace(op=CtlOp.FLUSH_ALL, value=0, accept_cycle=c) for c in (11, 12, 14, 17, 20, 23, 24)]
    ctl.append(SimpleNamespace(op=CtlOp.FLUSH_VA, value=0, accept_cycle=26))
    ctl.append(SimpleNamespace(op=CtlOp.WRITE_CR3, value=CR3_NOFLUSH, accept_cycle=13))
    bins = Counter()
    C.count_arrivals(bins, req, miss, ctl, reads, writes, pcide=True)
    assert bins == Counter({"arrival: FLUSH_ALL lookup-miss": 1, "arrival: FLUSH_ALL READ": 2,
                            "arrival: FLUSH_ALL WAIT": 2, "arrival: FLUSH_ALL AD": 1, "arrival: FLUSH_ALL DONE": 1,
                            "arrival: FLUSH_VA RESP": 1, "arrival: WRITE_CR3_NOFLUSH WAIT": 1})


def test_the_gate_names_the_bins_never_hit(capsys):
    every = dict.fromkeys((k for g in C.groups([CFG]) for k in g.reachable()), 1)
    record = {"test": "t", "config": "default", "scoreboard": {"coverage": every}}
    assert coverage_gate([record]) == 0
    del every["flush: FLUSH_VA 2M nonglobal other kept"]
    assert coverage_gate([record]) == 1
    out = capsys.readouterr().out
    assert "coverage gate FAILED: 1 reachable bins never hit: flush: FLUSH_VA 2M nonglobal other kept" in out
    assert "every reachable bin was hit" in C.report(Counter(every | {"flush: FLUSH_VA 2M nonglobal other kept": 1}),
                                                      [PRESETS["default"]])


def test_operations_during_a_request_apply_after_its_lookup():
    """A flush accepted while a hit is answered comes after it: that hit neither sees the flush's outcome nor
    counts as a hit after it; the next lookup does."""
    mem, pt = _world()
    pt.map(0x4000, 0x0800_0000)
    bins = Counter()
    mmu = C.CoveredRefMMU(CFG, mem, ControlRegs(cr3=pt.pml4), bins=bins)
    mmu.translate(0x4000, Access.READ, True)
    assert mmu.translate(0x4008, Access.READ, True, flushes_during_walk=[(CtlOp.FLUSH_VA, 0x4000)]).tlb_hit
    assert not [k for k in bins if k.startswith("flush")]
    assert not mmu.translate(0x4010, Access.READ, True).tlb_hit
    assert bins["flush: FLUSH_VA 4K nonglobal same dropped"] == 1
