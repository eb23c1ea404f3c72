"""Unit tests of the co-simulation testbench's pure-Python parts (no simulator needed):
payload packing, the DRAM timing model and write overlay, and the scoreboard's ordering rules."""

from __future__ import annotations

import random

import pytest

from hw import layouts
from model.config import DRAMTiming, MMUConfig
from model.mm.page_alloc import BuddyAllocator
from model.x86.pgtable import PageTables
from model.x86.physmem import PhysMem
from model.x86.pte import A, Access, FaultKind, PageSize
from model.x86.tlbflush import CtlOp
from sim.dram import DRAMStore, DRAMTimingModel
from sim.ports import MMUPorts, Payload
from sim.scoreboard import Scoreboard, ScoreboardMismatch, fault_class
from sim.transactions import CtlTxn, Request, Response

CFG = MMUConfig()


# --- ports -----------------------------------------------------------------------------


def test_payload_offsets_come_from_the_layout():
    layout = layouts.request_layout(CFG)
    p = Payload("req", layout)
    assert p.width == layout.size
    for name, field in layout:
        assert p.fields[name] == (field.offset, field.width)


@pytest.mark.parametrize("which", ["req", "resp", "ctl", "mem_req", "mem_resp", "flags", "counters"])
def test_pack_unpack_round_trip(which):
    p = getattr(MMUPorts.for_config(CFG), which)
    rng = random.Random(which)
    for _ in range(50):
        values = {n: rng.getrandbits(w) for n, (o, w) in p.fields.items()}
        word = p.pack(**values)
        assert word >> p.width == 0
        assert p.unpack(word) == values


def test_pack_refuses_what_does_not_fit():
    p = MMUPorts.for_config(CFG).req
    with pytest.raises(ValueError, match="access"):
        p.pack(access=4)
    with pytest.raises(KeyError, match="nonsense"):
        p.pack(nonsense=1)


def test_flags_bit_order_is_wp_first():
    p = MMUPorts.for_config(CFG).flags
    assert p.pack(wp=1) == 1 and p.pack(pcide=1) == 1 << 4


# --- DRAM timing and store --------------------------------------------------------------


def test_fixed_latency():
    m = DRAMTimingModel(DRAMTiming(kind="fixed", latency=7))
    assert [m.access(a, False) for a in (0, 8, 1 << 20)] == [7, 7, 7]


def test_ddr_row_hit_miss_conflict():
    t = DRAMTiming(kind="ddr", tRCD=3, tCL=5, tRP=2, banks=4, row_bytes=1024)
    m = DRAMTimingModel(t)
    assert m.access(0, False) == 3 + 5  # idle bank
    assert m.access(8, False) == 5  # same row
    assert m.access(1024, False) == 3 + 5  # next row is in the next bank (idle)
    assert m.access(4 * 1024, False) == 2 + 3 + 5  # bank 0, another row: conflict
    assert (m.stats.row_hits, m.stats.row_misses, m.stats.row_conflicts) == (1, 2, 1)


def test_jitter_is_seeded():
    t = DRAMTiming(kind="fixed", latency=2, jitter=9)

    def draws(seed):
        m = DRAMTimingModel(t, random.Random(seed))
        return [m.access(0, False) for _ in range(50)]

    assert draws(5) == draws(5) != draws(6)
    assert all(2 <= x <= 11 for x in draws(5))


def test_store_overlay_forwards_and_retires():
    mem = PhysMem(1 << 24)
    mem.write64(0x1000, 0x11)
    st = DRAMStore(mem)
    assert st.hw_read(0x1000, 1).value == 0x11
    w = st.hw_write(0x1000, 0x31, 2)
    assert mem.read64(0x1000) == 0x11, "a hardware write must not reach PhysMem before it is checked"
    assert st.hw_read(0x1000, 3).value == 0x31, "reads forward from the overlay"
    reads, writes = st.claim(2)
    assert [r.cycle for r in reads] == [1] and writes == [w]
    mem.write64(0x1000, 0x31)  # what the reference does when it predicts the write
    st.retire(writes)
    assert not st.pending_writes
    reads, writes = st.claim(10)
    assert [r.cycle for r in reads] == [3] and writes == []


def test_store_refuses_misaligned():
    st = DRAMStore(PhysMem(1 << 24))
    with pytest.raises(AssertionError, match="aligned"):
        st.hw_read(0x1004, 0)


def test_commit_pending_after_reset():
    mem = PhysMem(1 << 24)
    st = DRAMStore(mem)
    st.hw_write(0x2000, 0x25, 5)
    st.commit_pending()
    assert mem.read64(0x2000) == 0x25 and not st.pending_writes
    assert st.claim(100) == ([], [])


# --- scoreboard ordering ------------------------------------------------------------------


class Rig:
    """A scoreboard over real page tables, fed hand-made hardware events."""

    def __init__(self):
        self.mem = PhysMem(1 << 32)
        self.pt = PageTables(self.mem, BuddyAllocator(0x1000, 4096), CFG.maxphyaddr)
        self.store = DRAMStore(self.mem)
        self.sb = Scoreboard(CFG, self.mem, self.store, seed=1, replay="(replay)")
        self.seq = 0
        self.pa = 0x0800_0000
        self.pt.map(0x4000, self.pa, accessed=True, dirty=True)
        self.ctl(CtlOp.WRITE_CR3, self.pt.pml4, 0)

    def ctl(self, op, value, cycle):
        t = CtlTxn(op, value)
        t.accept_cycle = cycle
        self.sb.on_ctl(t)

    def request(self, vaddr, accept, answer, *, hit, walk_reads=(), writes=(), fault=FaultKind.NONE, paddr=None):
        req = Request(vaddr, Access.READ, False, self.seq, seq=self.seq, accept_cycle=accept)
        self.seq += 1
        for i, addr in enumerate(walk_reads):
            self.store.hw_read(addr, accept + 1 + i)
        for addr, value in writes:
            self.store.hw_write(addr, value, answer)
        resp = Response(paddr if paddr is not None else self.pa | (vaddr & 0xFFF), int(fault), 0, 0, hit,
                        req.id, answer)
        self.sb.on_request(req)
        self.sb.on_response(resp, req)

    def walk_addrs(self, vaddr):
        return [self.pt.entry_addr(vaddr, lvl) for lvl in (4, 3, 2, 1)]


def test_scoreboard_accepts_the_reference_answer():
    rig = Rig()
    rig.request(0x4008, 10, 20, hit=False, walk_reads=rig.walk_addrs(0x4000))
    rig.request(0x4010, 21, 22, hit=True)


def test_same_cycle_flush_is_ordered_before_the_request():
    rig = Rig()
    rig.request(0x4008, 10, 20, hit=False, walk_reads=rig.walk_addrs(0x4000))
    rig.ctl(CtlOp.FLUSH_ALL, 0, 30)  # accepted in the same cycle as the next request
    with pytest.raises(ScoreboardMismatch, match="tlb_hit"):
        rig.request(0x4010, 30, 31, hit=True)


def test_flush_during_a_walk_stops_the_fill():
    rig = Rig()
    rig.ctl(CtlOp.FLUSH_VA, 0x9000, 15)  # accepted while request 0 walks
    rig.request(0x4008, 10, 20, hit=False, walk_reads=rig.walk_addrs(0x4000))
    # the walk filled nothing: the next access misses again (the PWC was flushed too: four reads)
    rig.request(0x4010, 21, 30, hit=False, walk_reads=rig.walk_addrs(0x4000))
    with pytest.raises(ScoreboardMismatch, match="tlb_hit"):
        rig.request(0x4018, 31, 40, hit=False, walk_reads=[])


def test_missing_ad_write_is_a_mismatch():
    rig = Rig()
    rig.pt.map(0x5000, 0x0900_0000, accessed=False)
    with pytest.raises(ScoreboardMismatch, match="A/D writes"):
        rig.request(0x5000, 10, 20, hit=False, walk_reads=rig.walk_addrs(0x5000), paddr=0x0900_0000)


def test_ad_write_checked_and_retired():
    rig = Rig()
    addr = rig.pt.map(0x5000, 0x0900_0000, accessed=False)
    old = rig.mem.read64(addr)
    rig.request(0x5000, 10, 20, hit=False, walk_reads=rig.walk_addrs(0x5000), writes=[(addr, old | A)],
                paddr=0x0900_0000)
    assert rig.mem.read64(addr) == old | A and not rig.store.pending_writes


def test_counters_compared():
    rig = Rig()
    rig.request(0x4008, 10, 20, hit=False, walk_reads=rig.walk_addrs(0x4000))
    good = dict(rig.sb.ref.counters, walk_cycles=9)
    rig.sb.check_counters(good)
    with pytest.raises(ScoreboardMismatch, match="hits"):
        rig.sb.check_counters(dict(good, hits=good["hits"] + 1))


def test_fault_class_names():
    assert fault_class(0, 0) == "ok"
    assert fault_class(2, 0) == "noncanonical"
    assert fault_class(1, 0b01000 | 1) == "reserved"
    assert fault_class(1, 1) == "protection"
    assert fault_class(1, 0) == "not_present"
    assert PageSize.SIZE_4K == 0
