"""The compiled replay (replay/compiled_mmu.py) against the reference MMU: every counter, every policy, any geometry."""

from __future__ import annotations

import numpy as np
import pytest
import trace_strategies
from hypothesis import given, settings
from hypothesis import strategies as st

from model.config import MMUConfig, Policy, TLBConfig
from model.x86.pte import Access
from replay.compiled_mmu import DIRTY_REWALKS, DTLB_RECORD_MISSES, CompiledMMU, replay_compiled, replay_file
from replay.lackey import SHIPPED_TRACE, Trace, parse_lackey, read_lackey
from replay.trace_replay import replay

R, W, F = Access.READ, Access.WRITE, Access.FETCH

# Pages in several PML4, PDPT and PD regions (so the page-walk cache hits at every level and evicts),
# 24 neighbours in one PD (so the TLBs evict), and a non-canonical page.
_PAGES = ([0x400000 + (i << 12) for i in range(24)]
          + [0x800000, 0x40000000, 0x7FFF0000000, 0x1FFF000000, 0xFFFF800000000000, 0x800000000000])


def traces():
    return trace_strategies.traces(_PAGES, max_repeat=3, max_runs=120)


def cfg(dtlb, itlb, policy, pwc, model_only=False) -> MMUConfig:
    p = Policy(policy)
    return MMUConfig(itlb=TLBConfig(*itlb, p, model_only=model_only), dtlb=TLBConfig(*dtlb, p, model_only=model_only),
                     pwc_entries=pwc)


def same(a, b) -> bool:
    return a.to_json() == b.to_json() and a.counters == b.counters and a.walk_shapes == b.walk_shapes


@pytest.mark.parametrize("policy", [p.value for p in Policy])
@settings(max_examples=150, deadline=None)
@given(t=traces(), geometry=st.sampled_from([((4, 2), (2, 2)), ((2, 2), (4, 1)), ((4, 4), (4, 2)),
                                             ((8, 2), (2, 1)), ((8, 1), (1, 1)), ((16, 8), (8, 4))]),
       pwc=st.sampled_from([0, 1, 2, 8]))
def test_every_counter_equals_the_reference_replay(policy, t, geometry, pwc):
    config = cfg(*geometry, policy, pwc)
    assert same(replay_compiled(t, config).result(), replay(t, config, fold=False))


@pytest.mark.parametrize("policy", [p.value for p in Policy])
@pytest.mark.parametrize("dtlb", [(32, 4), (16, 16), (8, 1), (64, 2), (64, 64), (256, 32)])
def test_real_trace_equals_the_reference_replay(policy, dtlb):
    # 64 and 256 entries of 64 and 32 LRU ways: beyond the hardware, but the reference model takes them.
    t = read_lackey(SHIPPED_TRACE)
    config = cfg(dtlb, (16, 4), policy, 8, model_only=True)
    assert same(replay_compiled(t, config).result(), replay(t, config))


def test_chunks_in_any_sizes_give_the_same_counters():
    t = read_lackey(SHIPPED_TRACE)
    config = MMUConfig()
    whole = replay_compiled(t, config)
    fed = CompiledMMU(config)
    cuts = [0, 1, 7, 1000, 123_457, 500_000, len(t)]
    for a, b in zip(cuts, cuts[1:]):
        fed.feed(t.vaddr[a:b], t.access[a:b], t.first[a:b])
    assert np.array_equal(whole.counts, fed.counts) and same(whole.result(), fed.result())


def test_id_table_grows_past_its_first_size():
    # 20,000 distinct pages over 200 page tables: the id table starts at 4096 slots.
    pages = np.arange(20_000, dtype=np.uint64) * np.uint64(4096 + 4096 * 511)
    t = Trace.from_arrays(np.concatenate([pages, pages[::-1]]), np.full(40_000, R, np.uint8))
    config = MMUConfig(dtlb=TLBConfig(8, 2))
    assert same(replay_compiled(t, config).result(), replay(t, config))


def test_file_replay_streams_and_limits(tmp_path):
    t = read_lackey(SHIPPED_TRACE)
    done = replay_file(SHIPPED_TRACE, MMUConfig())
    assert (done.accesses, done.records) == (len(t), t.records)
    assert same(done.mmu.result(), replay(t, MMUConfig()))
    part = replay_file(SHIPPED_TRACE, MMUConfig(), limit=100_000)
    prefix = Trace.from_arrays(t.vaddr[:100_000], t.access[:100_000])
    assert part.accesses == len(t) and same(part.mmu.result(), replay(prefix, MMUConfig()))


def test_record_misses_count_a_crossing_record_once_and_leave_out_d_bit_rewalks():
    # One data record crossing pages 0 and 1 (both miss: two DTLB misses, one record miss); then a write
    # to page 0, whose entry is clean: a D-bit re-walk, a DTLB miss but not a record miss.
    t = parse_lackey(" L 10000ffc,8\n S 10000000,8\n")
    m = replay_compiled(t, MMUConfig())
    assert (m.result().dtlb_misses, m.count(DTLB_RECORD_MISSES), m.count(DIRTY_REWALKS)) == (3, 1, 1)
