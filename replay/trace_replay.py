"""Replay a program's memory trace through the reference MMU.

The address space: every page the trace touches is mapped, before the replay,
as a 4 KiB user page that is writable and executable (R/W=1, U/S=1, XD=0), in
one set of page tables built over a ``PhysMem``, with the page-table pages and
the data frames taken from a ``BuddyAllocator`` in order of first touch.  The
trace does not say which pages are code or read-only, and mapping everything
with full rights means no access faults: the counters measure the TLBs and the
page walks, not a fault path.  A and D start clear in every leaf, so the
first access to a page sets A and the first write sets D (one DRAM write each)
and a write to a page first read takes the D-bit rewalk, as on real hardware.
Only a non-canonical address faults.  All accesses are user mode.

Fetches look up the ITLB, reads and writes the DTLB (``RefMMU`` routes them by
access); both share the page-walk cache and the page tables.

Folding, which is what makes tens of millions of accesses replay in seconds:
the accesses of one stream (fetches for the ITLB, reads and writes for the
DTLB) that map to one TLB set form a *chain*, and an access is *folded*
(counted, but not sent to the model) when the previous access of its chain was
to the same page and it is a fetch or a read, or a write after a write earlier
in that run of the page.  With one set (a fully associative TLB) the chain is
the whole stream and this is "the same page as the stream's last access".
Such an access is a TLB hit that changes nothing:

- the page's entry is there: the previous access of the chain filled or hit
  it, and since then this TLB has only been asked about pages of other sets
  (the other stream uses the other TLB; replay sends no flushes), and a fill
  evicts only within its own set;
- it completes: every page has full rights, and a write finds the entry dirty
  (the earlier write of the run either walked and set D or hit a dirty entry);
- it changes no replacement state: within its set it is the entry touched
  last, so a true-LRU or tree-PLRU touch leaves that set's order or bits as
  they were (both keep state per set), and FIFO and RANDOM change nothing on
  a hit (the shared LFSR steps only on a fill);
- it reads no memory and does not look up the page-walk cache.

So removing it changes nothing that any other access of either stream sees,
and the accesses that are kept stay in their original relative order, so the
walks that share the PWC and the page tables happen in the same order.  The
first write of a run is never folded: its entry may be clean, and then it must
walk to set D.  ``tests/test_trace_replay.py`` replays random traces both ways
for every policy and several geometries and compares every counter.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.config import MMUConfig
from model.errors import UserError
from model.mm.page_alloc import BuddyAllocator
from model.reference.ref_mmu import RefMMU
from model.reference.ref_walker import ControlRegs
from model.x86.pgtable import PageTables
from model.x86.physmem import PhysMem
from model.x86.pte import PAGE_SHIFT, Access, FaultKind
from replay.lackey import Trace

# The zone starts at 1 MiB, as x86 Linux leaves the first MiB alone.
ZONE_START_PFN = (1 << 20) >> PAGE_SHIFT
_VPN_MASK = np.uint64((1 << 36) - 1)  # vaddr[47:12]

RESULT_KEYS = ("accesses", "itlb_misses", "dtlb_misses", "walks", "dram_reads", "faults", "cycles")


def canonical_mask(vaddr: np.ndarray) -> np.ndarray:
    """Which addresses are canonical (bits 63:47 all equal)."""
    top = vaddr >> np.uint64(47)
    return (top == 0) | (top == np.uint64(0x1FFFF))


def fold_mask(vaddr: np.ndarray, access: np.ndarray, itlb_sets: int = 1, dtlb_sets: int = 1) -> np.ndarray:
    """The accesses that must reach the model; the rest are state-free TLB hits (module docstring)."""
    page = vaddr >> np.uint64(PAGE_SHIFT)
    keep = ~canonical_mask(vaddr)  # non-canonical: never a lookup, always a fault; keep them all
    for stream, sets in ((access == Access.FETCH, itlb_sets), (access != Access.FETCH, dtlb_sets)):
        idx = np.flatnonzero(stream)
        if sets > 1:  # each set's chain in order, one after the other (a stable sort by set)
            set_index = (page[idx] & np.uint64(sets - 1)).astype(np.min_scalar_type(sets - 1))
            idx = idx[np.argsort(set_index, kind="stable")]
        p = page[idx]
        first = np.ones(len(idx), bool)  # the first access of each run of one page in a chain
        first[1:] = p[1:] != p[:-1]
        run = np.cumsum(first)
        writes = np.flatnonzero(access[idx] == Access.WRITE)
        wrun = run[writes]
        first_write = np.ones(len(writes), bool)
        first_write[1:] = wrun[1:] != wrun[:-1]
        first[writes[first_write]] = True
        keep[idx[first]] = True
    return keep


@dataclass
class AddressSpace:
    """The memory a trace runs in: page tables mapping every page it touches (module docstring)."""

    mem: PhysMem
    allocator: BuddyAllocator
    tables: PageTables
    ctrl: ControlRegs
    pages: int  # data pages mapped

    @classmethod
    def for_trace(cls, trace: Trace, cfg: MMUConfig, mem: PhysMem | None = None,
                  allocator: BuddyAllocator | None = None) -> "AddressSpace":
        """Map the pages of ``trace``; by default in a memory whose zone holds exactly the pages needed.

        A co-simulation passes its own ``mem`` and ``allocator`` (the ones its DRAM model serves).
        """
        ok = canonical_mask(trace.vaddr)
        vpn = (trace.vaddr[ok] >> np.uint64(PAGE_SHIFT)) & _VPN_MASK
        uniq, first = np.unique(vpn, return_index=True)
        pages = uniq[np.argsort(first, kind="stable")]  # in order of first touch
        tables = 1 + sum(len(np.unique(uniq >> np.uint64(shift))) for shift in (9, 18, 27))
        nr_pages = len(pages) + tables
        if allocator is None:
            frames = (1 << (cfg.maxphyaddr - PAGE_SHIFT)) - ZONE_START_PFN
            if nr_pages > frames:
                raise UserError(f"{trace.name}: touches {len(pages)} pages, which with {tables} page-table pages "
                                f"need more than the {frames} frames of MAXPHYADDR={cfg.maxphyaddr}")
            allocator = BuddyAllocator(ZONE_START_PFN, nr_pages)
        elif nr_pages > allocator.nr_free_pages:
            raise UserError(f"{trace.name}: touches {len(pages)} pages, which with {tables} page-table pages "
                            f"need more than the {allocator.nr_free_pages} free pages of the zone")
        if mem is None:
            mem = PhysMem(allocator.end_pfn << PAGE_SHIFT)
        pt = PageTables(mem, allocator, cfg.maxphyaddr)
        sign = 0xFFFF << 48
        for vpn in pages.tolist():
            pfn = allocator.alloc_pages(0)
            va = vpn << PAGE_SHIFT
            pt.map(va | sign if va >> 47 else va, pfn << PAGE_SHIFT, writable=True, user=True, nx=False)
        return cls(mem, allocator, pt, ControlRegs(cr3=pt.pml4), len(pages))


@dataclass
class ReplayResult:
    """What a replay reports; ``to_json`` gives the keys of ``mmu trace --json``."""

    accesses: int
    itlb_misses: int
    dtlb_misses: int
    walks: int
    dram_reads: int
    faults: int
    cycles: int | None  # None: not simulated (the reference model has no clock)
    replayed: int  # accesses sent to the model after folding
    pages: int  # distinct pages mapped
    counters: dict[str, int] = field(default_factory=dict)  # the reference's counters, folded hits added
    # walks by (DRAM reads, DRAM writes): what a walk costs in cycles (replay/sweep.py's timing model)
    walk_shapes: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in RESULT_KEYS}


_ACCESS = (Access.READ, Access.WRITE, Access.FETCH)  # by port encoding
_CHUNK = 1 << 14  # accesses between progress-bar updates: keeps the bar out of the per-access loop


def progress_bar(total: int, desc: str, unit: str, *, show: bool, unit_scale: bool = False) -> tqdm:
    """A tqdm bar on stderr; hidden unless ``show`` and stderr is a terminal (tqdm's ``disable=None``)."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=False, file=sys.stderr,
                disable=None if show else True)


def replay(trace: Trace, cfg: MMUConfig, *, fold: bool = True, progress: bool = False) -> ReplayResult:
    """Replay ``trace`` through a fresh reference MMU over a fresh address space.

    ``progress`` shows a bar over the accesses that reach the model (see :func:`progress_bar`).
    """
    space = AddressSpace.for_trace(trace, cfg)
    mmu = RefMMU(cfg, space.mem, space.ctrl)
    keep = fold_mask(trace.vaddr, trace.access, cfg.itlb.sets, cfg.dtlb.sets) if fold else np.ones(len(trace), bool)
    misses = [0, 0, 0]  # by access: READ, WRITE, FETCH
    shapes = Counter()
    translate = mmu.translate
    noncanonical = FaultKind.NONCANONICAL
    vaddrs, accesses = trace.vaddr[keep].tolist(), trace.access[keep].tolist()
    with progress_bar(len(vaddrs), f"replay {Path(trace.name).name}", "access", show=progress, unit_scale=True) as bar:
        for start in range(0, len(vaddrs), _CHUNK):
            for vaddr, access in zip(vaddrs[start:start + _CHUNK], accesses[start:start + _CHUNK]):
                r = translate(vaddr, _ACCESS[access], True)
                if not r.tlb_hit and r.fault is not noncanonical:
                    misses[access] += 1
                    shapes[len(r.walk.reads), len(r.walk.writes)] += 1
            bar.update(min(_CHUNK, len(vaddrs) - start))
    counters = dict(mmu.counters)
    folded = len(trace) - int(np.count_nonzero(keep))
    counters["lookups"] += folded
    counters["hits"] += folded
    return ReplayResult(
        accesses=len(trace), itlb_misses=misses[Access.FETCH], dtlb_misses=misses[Access.READ] + misses[Access.WRITE],
        walks=counters["walks"], dram_reads=counters["mem_reads"], faults=counters["faults"], cycles=None,
        replayed=len(trace) - folded, pages=space.pages, counters=counters, walk_shapes=shapes)
