"""The reference MMU on a replay's address space as one compiled loop (numba): any geometry, bounded memory.

In the replay's address space (``replay/trace_replay.py``: every page a 4 KiB user page with full rights, A
and D clear, no flushes) a walk cannot fault, and what it costs depends on two things only: which page-table
entries already have A set (and the leaf D), and what the page-walk cache holds.  So the state of a replay is
small integer arrays, and each access is a few array operations:

- a hash table gives every page-table entry the trace reaches a dense id: the leaf (PTE) of each page, and
  the PDE, PDPTE and PML4E above it (the PWC's keys); per leaf, its A and D bits and its slot in each TLB
  (``model/x86/pgtable.py`` makes table entries with A set, as Linux does, so only leaves get A/D writes);
- each TLB is its ways per set, a D bit per way, and the replacement state of ``ref_replacement.py``: LRU
  use stamps, tree-PLRU node bits, a FIFO pointer per set, or one 16-bit LFSR;
- the page-walk cache is its slots (the id of the cached entry) and LRU stamps.

Every step is the reference's (``model/reference/ref_tlb.py``, ``ref_replacement.py``, ``ref_pwc.py``,
``ref_walker.py``), in the same order: a hit touches its way; a write that finds its entry clean invalidates it
(replacement state untouched) and walks again; a miss looks up the PWC (deepest entry first, touching it),
reads the levels below, writes A (and D for a write) on a leaf that lacks them, fills the PWC top-down
and the TLB (lowest invalid way, else the policy's victim, then a touch).  ``tests/test_compiled_mmu.py``
compares every counter with the reference replay for every policy and many geometries.

Nothing bounds the geometry but memory: LRU of 1024 ways is as good as 4; the hardware's limits are checked
where hardware is built (``model/config.py``, ``check_buildable``).

A trace is fed in chunks (:meth:`CompiledMMU.feed`), so memory grows with the pages touched, not with the
accesses.  Besides the reference's counters it counts, per stream, the *record misses*: the records (lackey
lines) with at least one miss other than a D-bit re-walk.  That is what a cache simulator with 4 KiB lines and
the same geometry counts (valgrind's cachegrind: a reference that crosses a line is one access, a miss if
either line misses; a write allocates), and ``dirty_rewalks``: the writes that found their entry clean.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from model.config import MMUConfig, Policy
from model.errors import UserError
from model.x86.pte import PAGE_SHIFT
from replay.lackey import LackeyFile
from replay.trace_replay import ZONE_START_PFN, ReplayResult, progress_bar

_POLICY_CODE = {Policy.LRU: 0, Policy.PLRU: 1, Policy.FIFO: 2, Policy.RANDOM: 3}
LFSR_TAPS = 0xB400  # model/reference/ref_replacement.py

# Counter slots of the ``counts`` array.
(LOOKUPS, HITS, MISSES, WALKS, MEM_READS, MEM_WRITES, FAULTS, PWC_HITS, ITLB_MISSES, DTLB_MISSES,
 ITLB_LOOKUPS, DTLB_LOOKUPS, ITLB_RECORD_MISSES, DTLB_RECORD_MISSES, DIRTY_REWALKS, ACCESSES, RECORDS,
 _NCOUNTS) = range(18)
REFERENCE_COUNTERS = ("lookups", "hits", "misses", "walks", "mem_reads", "mem_writes", "faults", "pwc_hits")
# Slots of the ``meta`` array: ids handed out per level (leaf, PDE, PDPTE, PML4E), clocks, the open record.
_IDS, _PWC_CLOCK, _REC_MISSED, _NMETA = 0, 4, 5, 6
_MIN_TABLE = 1 << 12


@numba.njit(cache=True, nogil=True)
def _slot_of(keys, key):
    """The slot of ``key`` (stored as key + 1; 0 is empty) in the open-addressing table, or where it goes."""
    mask = np.uint64(len(keys) - 1)
    h = ((key + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)
    i = h & mask
    while keys[i] != np.uint64(0) and keys[i] != key + np.uint64(1):
        i = (i + np.uint64(1)) & mask
    return i


@numba.njit(cache=True, nogil=True)
def _id_of(keys, ids, meta, level, prefix):
    key = (np.uint64(level) << np.uint64(40)) | prefix
    i = _slot_of(keys, key)
    if keys[i] == np.uint64(0):
        keys[i] = key + np.uint64(1)
        ids[i] = meta[0] + meta[1] + meta[2] + meta[3]
        meta[_IDS + level] += 1
    return ids[i]


@numba.njit(cache=True, nogil=True)
def _rehash(old_keys, old_ids, keys, ids):
    for i in range(len(old_keys)):
        if old_keys[i] != np.uint64(0):
            j = _slot_of(keys, old_keys[i] - np.uint64(1))
            keys[j] = old_keys[i]
            ids[j] = old_ids[i]


@numba.njit(cache=True, nogil=True)
def _touch(t, s, way, ways, policy, stamp, clock, bits):
    base = s * ways
    if policy == 0:
        clock[t] += 1
        stamp[t, base + way] = clock[t]
    elif policy == 1:
        node = ways + way
        while node > 1:
            parent = node >> 1
            bits[t, base + parent] = 1 if node & 1 == 0 else 0
            node = parent


@numba.njit(cache=True, nogil=True)
def _victim(t, s, ways, policy, stamp, bits, fifo, lfsr):
    """The way a fill into the full set ``s`` replaces, advancing the FIFO pointer or the LFSR."""
    base = s * ways
    if policy == 0:
        way = 0
        for w in range(1, ways):
            if stamp[t, base + w] < stamp[t, base + way]:
                way = w
        return way
    if policy == 1:
        node = 1
        while node < ways:
            node = 2 * node + bits[t, base + node]
        return node - ways
    if policy == 2:
        way = fifo[t, s]
        fifo[t, s] = (way + 1) % ways
        return way
    state = lfsr[t]
    state = (state >> 1) ^ LFSR_TAPS if state & 1 else state >> 1
    lfsr[t] = state
    return state % ways


@numba.njit(cache=True, nogil=True)
def _pwc_find(pwc_key, key):
    for i in range(len(pwc_key)):
        if pwc_key[i] == key:
            return i
    return -1


@numba.njit(cache=True, nogil=True)
def _pwc_fill(pwc_key, pwc_stamp, meta, key):
    slot = _pwc_find(pwc_key, key)
    if slot < 0:
        slot = _pwc_find(pwc_key, -1)
    if slot < 0:
        slot = 0
        for i in range(1, len(pwc_key)):
            if pwc_stamp[i] < pwc_stamp[slot]:
                slot = i
    pwc_key[slot] = key
    meta[_PWC_CLOCK] += 1
    pwc_stamp[slot] = meta[_PWC_CLOCK]


@numba.njit(cache=True, nogil=True)
def _run(vaddr, access, first, k, keys, ids, meta, abit, dbit, where, geometry, tag, dirty, valid, stamp, clock,
         bits, fifo, lfsr, pwc_key, pwc_stamp, counts, shapes):
    """Replay accesses ``k`` onwards; returns where it stopped: ``len(vaddr)``, or earlier when the id table
    needs to grow (the caller grows it and calls again from there)."""
    n = len(vaddr)
    has_first = len(first) == n
    vpn_mask = np.uint64((1 << 36) - 1)
    nine = np.uint64(9)
    ids_in = np.zeros(4, np.int64)  # the ids of this walk's PTE, PDE, PDPTE, PML4E
    start_k, records, fetches, hits = k, 0, 0, 0  # the hottest counters, in registers until the return
    while k < n:
        if 2 * (meta[0] + meta[1] + meta[2] + meta[3] + 4) > len(keys):
            break
        v = vaddr[k]
        a = access[k]
        if not has_first or first[k]:
            records += 1
            meta[_REC_MISSED] = 0
        top = v >> np.uint64(47)
        if top != np.uint64(0) and top != np.uint64(0x1FFFF):
            counts[FAULTS] += 1
            k += 1
            continue
        vpn = (v >> np.uint64(12)) & vpn_mask
        t = 0 if a == 2 else 1
        sets, ways, policy = geometry[t, 0], geometry[t, 1], geometry[t, 2]
        page = _id_of(keys, ids, meta, 0, vpn)
        counts[DTLB_LOOKUPS] += t
        fetches += 1 - t
        s = np.int64(vpn & np.uint64(sets - 1))
        slot = where[t, page]
        rewalk = False
        if slot >= 0:
            if a != 1 or dirty[t, slot]:
                hits += 1
                _touch(t, s, slot - s * ways, ways, policy, stamp, clock, bits)
                k += 1
                continue
            tag[t, slot] = -1  # a write to a clean entry: invalidate it and walk again
            where[t, page] = -1
            valid[t, s] -= 1
            rewalk = True
            counts[DIRTY_REWALKS] += 1
        counts[MISSES] += 1
        counts[WALKS] += 1
        counts[ITLB_MISSES + t] += 1
        if not rewalk and meta[_REC_MISSED] == 0:
            meta[_REC_MISSED] = 1
            counts[ITLB_RECORD_MISSES + t] += 1

        # The walk: the PWC's deepest entry, then the levels below it (level 3 = PML4E ... 0 = PTE).
        ids_in[0] = page
        for level in range(1, 4):
            ids_in[level] = _id_of(keys, ids, meta, level, vpn >> (nine * np.uint64(level)))
        start = 3
        if len(pwc_key):
            for level in range(1, 4):
                hit = _pwc_find(pwc_key, ids_in[level])
                if hit >= 0:
                    meta[_PWC_CLOCK] += 1
                    pwc_stamp[hit] = meta[_PWC_CLOCK]
                    counts[PWC_HITS] += 1
                    start = level - 1
                    break
        writes = 0  # the tables' own entries are made with A set (Linux's _PAGE_TABLE): only the leaf's
        if not abit[page] or (a == 1 and not dbit[page]):
            abit[page] = 1
            if a == 1:
                dbit[page] = 1
            writes += 1
        counts[MEM_READS] += start + 1
        counts[MEM_WRITES] += writes
        shapes[start + 1, writes] += 1
        if len(pwc_key):
            for level in range(start, 0, -1):
                _pwc_fill(pwc_key, pwc_stamp, meta, ids_in[level])

        # The fill: the lowest invalid way, else the policy's victim.
        base = s * ways
        if valid[t, s] < ways:
            way = 0
            while tag[t, base + way] >= 0:
                way += 1
        else:
            way = _victim(t, s, ways, policy, stamp, bits, fifo, lfsr)
            where[t, tag[t, base + way]] = -1
            valid[t, s] -= 1
        tag[t, base + way] = page
        dirty[t, base + way] = dbit[page]
        where[t, page] = base + way
        valid[t, s] += 1
        _touch(t, s, way, ways, policy, stamp, clock, bits)
        k += 1
    counts[ACCESSES] += k - start_k
    counts[RECORDS] += records
    counts[ITLB_LOOKUPS] += fetches
    counts[HITS] += hits
    counts[LOOKUPS] = counts[ITLB_LOOKUPS] + counts[DTLB_LOOKUPS]
    return k


class CompiledMMU:
    """The replay state of one configuration; :meth:`feed` it chunks of a trace in order, then :meth:`result`."""

    def __init__(self, cfg: MMUConfig) -> None:
        self.cfg = cfg
        tlbs = (cfg.itlb, cfg.dtlb)
        self.geometry = np.array([[t.sets, t.ways, _POLICY_CODE[t.policy]] for t in tlbs], np.int64)
        most = max(t.entries for t in tlbs)
        self.tag = np.full((2, most), -1, np.int64)
        self.dirty = np.zeros((2, most), np.uint8)
        self.stamp = np.zeros((2, most), np.int64)
        self.bits = np.zeros((2, most), np.uint8)  # tree-PLRU node n of set s at s * ways + n
        self.valid = np.zeros((2, max(t.sets for t in tlbs)), np.int64)
        self.fifo = np.zeros_like(self.valid)
        self.clock = np.zeros(2, np.int64)
        self.lfsr = np.full(2, cfg.lfsr_seed, np.int64)
        self.pwc_key = np.full(cfg.pwc_entries, -1, np.int64)
        self.pwc_stamp = np.zeros(cfg.pwc_entries, np.int64)
        self.counts = np.zeros(_NCOUNTS, np.int64)
        self.shapes = np.zeros((5, 6), np.int64)  # walks by (DRAM reads, DRAM writes)
        self.meta = np.zeros(_NMETA, np.int64)
        self._tables(_MIN_TABLE)
        self.frames = (1 << (cfg.maxphyaddr - PAGE_SHIFT)) - ZONE_START_PFN
        self.name = "<trace>"

    def _tables(self, size: int) -> None:
        """(Re)allocate the id table and the per-id arrays for ``size`` slots (at most half of them used)."""
        keys, ids = np.zeros(size, np.uint64), np.zeros(size, np.int64)
        if hasattr(self, "keys"):
            _rehash(self.keys, self.ids, keys, ids)
            n = len(self.keys)
            grow = lambda old, fill: np.concatenate([old, np.full(old.shape[:-1] + (size - n,), fill, old.dtype)],
                                                    axis=-1)
            self.abit, self.dbit, self.where = grow(self.abit, 0), grow(self.dbit, 0), grow(self.where, -1)
        else:
            self.abit, self.dbit = np.zeros(size, np.uint8), np.zeros(size, np.uint8)
            self.where = np.full((2, size), -1, np.int64)
        self.keys, self.ids = keys, ids

    def feed(self, vaddr: np.ndarray, access: np.ndarray, first: np.ndarray | None = None, name: str = "") -> None:
        """Replay the next accesses; ``first[k]``: access k starts a record (None: every access does)."""
        vaddr = np.ascontiguousarray(vaddr, np.uint64)
        access = np.ascontiguousarray(access, np.uint8)
        first = np.empty(0, np.bool_) if first is None else np.ascontiguousarray(first, np.bool_)
        self.name = name or self.name
        k = 0
        while True:
            k = _run(vaddr, access, first, k, self.keys, self.ids, self.meta, self.abit, self.dbit, self.where,
                     self.geometry, self.tag, self.dirty, self.valid, self.stamp, self.clock, self.bits, self.fifo,
                     self.lfsr, self.pwc_key, self.pwc_stamp, self.counts, self.shapes)
            if k == len(vaddr):
                break
            self._tables(2 * len(self.keys))
        pages, tables = int(self.meta[_IDS]), 1 + int(self.meta[_IDS + 1:_IDS + 4].sum())
        if pages + tables > self.frames:
            raise UserError(f"{self.name}: touches {pages} pages, which with {tables} page-table pages need more "
                            f"than the {self.frames} frames of MAXPHYADDR={self.cfg.maxphyaddr}")

    @property
    def pages(self) -> int:
        return int(self.meta[_IDS])

    def count(self, slot: int) -> int:
        return int(self.counts[slot])

    def result(self) -> ReplayResult:
        c = self.counts
        counters = {name: int(c[i]) for i, name in enumerate(REFERENCE_COUNTERS)}
        shapes = Counter({(int(r), int(w)): int(self.shapes[r, w]) for r, w in zip(*np.nonzero(self.shapes))})
        return ReplayResult(
            accesses=int(c[ACCESSES]), itlb_misses=int(c[ITLB_MISSES]), dtlb_misses=int(c[DTLB_MISSES]),
            walks=int(c[WALKS]), dram_reads=int(c[MEM_READS]), faults=int(c[FAULTS]), cycles=None,
            replayed=int(c[ACCESSES]), pages=self.pages, counters=counters, walk_shapes=shapes)


def replay_compiled(trace, cfg: MMUConfig) -> CompiledMMU:
    """A whole in-memory ``Trace`` through a fresh :class:`CompiledMMU` (which is returned, for its counters)."""
    mmu = CompiledMMU(cfg)
    mmu.feed(trace.vaddr, trace.access, getattr(trace, "first", None), trace.name)
    return mmu



@dataclass
class FileReplay:
    """A lackey file replayed chunk by chunk: the replay state, and the size of the whole file."""

    mmu: CompiledMMU
    accesses: int  # page accesses in the whole file (``mmu`` saw the first ``limit`` of them)
    records: int  # records in the whole file


def replay_file(path, cfg: MMUConfig, *, limit: int | None = None, progress: bool = False) -> FileReplay:
    """Stream the lackey trace at ``path`` (plain or gzip) through a :class:`CompiledMMU`: host memory is
    bounded by the pages the trace touches, whatever its length.  ``limit``: only the first ``limit`` page
    accesses are replayed (the rest are still read, to count them).  ``progress``: a bar over the file."""
    mmu = CompiledMMU(cfg)
    accesses = records = 0
    with LackeyFile(path) as f, progress_bar(f.size, f"replay {Path(path).name}", "B", show=progress,
                                             unit_scale=True) as bar:
        for chunk in f.chunks():
            n = len(chunk) if limit is None else max(0, min(len(chunk), limit - accesses))
            if n:
                mmu.feed(chunk.vaddr[:n], chunk.access[:n], chunk.first[:n], f.name)
            accesses += len(chunk)
            records += chunk.records
            bar.update(f.position - bar.n)
    return FileReplay(mmu, accesses, records)
