"""`mmu sweep`: how a trace's TLB hit rates and translation cost change with the DTLB and the page-walk cache.

What varies: the DTLB's entries, ways and replacement policy, and the page-walk
cache size.  The ITLB stays as the base configuration has it (default: 16
entries, fully associative, LRU) in every row: it only sees fetches, so its
hits and misses do not depend on the DTLB at all, and varying it too would
mix two effects in one curve.  Its hit rate is reported in every row anyway,
since its walks share the page-walk cache and count in the cycles.

Every figure is exact for the replay's address space (``replay/trace_replay.py``:
every page mapped as a 4 KiB page with full rights, no flushes): each row is the
compiled replay (``replay/compiled_mmu.py``, the reference MMU step for step, any
geometry), tens of millions of accesses a second.  Rows beyond what the hardware
builds (LRU of more than ``MAX_LRU_WAYS`` ways) are marked: the ideal that PLRU
approximates.

The hit-rate curve of fully associative true LRU comes from stack distances
(:class:`LRUStack`; per set, so any set count): ``replay/stack_distance.py``
gives, in one pass over the DTLB stream (canonical reads and writes), every
access's LRU stack distance over the pages of its set.  A set of W ways then holds
exactly its W most recently used pages, and a data access misses (counted as
``dtlb_misses`` of ``mmu trace``: a lookup that does not complete) exactly when
its distance is >= W *or it is the first write to its page*.  The second clause
is the D-bit rule: an entry is dirty only if a write to its page came at or
before its fill, so a write to a resident page finds a clean entry exactly when
no earlier write to that page exists; it walks again, and the re-fill makes the
page most recently used, which is where the hit would have put it, so the LRU
order (the distances) is unchanged.  ``tests/test_sweep.py`` checks the
distances against the replay for every size and associativity.

The timing model (:class:`CycleModel`) turns DRAM reads and writes into the
cycles the Amaranth MMU takes, with a fixed DRAM latency.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.config import MAX_LRU_WAYS, MMUConfig, Policy, TLBConfig
from model.errors import UserError
from model.x86.pte import PAGE_SHIFT, Access
from replay.compiled_mmu import replay_compiled
from replay.lackey import Trace
from replay.stack_distance import lru_hits, stack_distances
from replay.trace_replay import canonical_mask, progress_bar

_VPN_MASK = np.uint64((1 << 36) - 1)  # vaddr[47:12], the TLB tag of a 4 KiB page


@dataclass(frozen=True)
class CycleModel:
    """Cycles from a translate request's accept handshake to its response handshake, as the Amaranth
    MMU takes them with a fixed DRAM latency ``L`` and ready always high (docs/hardware.md, "Timing").

    - A hit (and a non-canonical address): 1 cycle; the lookup is the cycle after the accept, and the
      response goes out in it.
    - A miss: ``3 + R * (L + 1) + W`` for a walk of ``R`` DRAM reads and ``W`` A/D writes.  Each level
      costs the walker's READ cycle (the request handshake) plus the ``L`` cycles until the entry arrives
      and is checked in WAIT; each A/D write is one cycle (AD); the fixed 3 are the lookup, the walker's
      DONE and the response cycle (RESP).  The hardware's ``walk_cycles`` counter counts 2 fewer (the
      cycles in its WALK state).  The DRAM answers a read no sooner than the cycle after it (``sim/dram.py``:
      ``max(1, latency)``), so a latency of 0 costs what 1 does.

    Not counted: the cycles after a miss's response in which the page-walk cache takes its new entries
    (FILL, one per cycle), which delay the *next* request; so this is the latency of a translation, not
    the throughput of a stream.  ``tests/test_sweep.py`` checks the formula against the Amaranth design
    in simulation (``sim/pysim.py``).
    """

    dram_latency: int
    HIT = 1
    MISS_FIXED = 3

    @classmethod
    def for_config(cls, cfg: MMUConfig) -> "CycleModel":
        dram = cfg.dram
        if dram.kind != "fixed" or dram.jitter or dram.ready_drop:
            raise UserError(f"dram kind {dram.kind!r}, jitter {dram.jitter}, ready_drop {dram.ready_drop}: "
                            "the sweep's cycle model needs a fixed DRAM latency (kind 'fixed', jitter 0, "
                            "ready_drop 0)")
        return cls(max(1, dram.latency))

    def miss(self, reads: int, writes: int) -> int:
        return self.MISS_FIXED + reads * (self.dram_latency + 1) + writes

    def total(self, translations: int, walk_shapes: Counter) -> int:
        """Cycles of ``translations`` requests, one at a time, whose walks had these (reads, writes)."""
        return translations * self.HIT + sum(n * (self.miss(r, w) - self.HIT) for (r, w), n in walk_shapes.items())

    def describe(self) -> str:
        return (f"hit {self.HIT} cycle; miss {self.MISS_FIXED} + {self.dram_latency + 1} x DRAM reads + A/D writes "
                f"(DRAM latency {self.dram_latency}; docs/hardware.md, Timing)")


@dataclass(frozen=True)
class Point:
    """One configuration of the sweep: the DTLB geometry and policy, and the page-walk cache size."""

    entries: int
    ways: int
    policy: Policy
    pwc: int

    @property
    def buildable(self) -> bool:
        """False for LRU beyond the hardware's LRU way limit (an ideal, model only)."""
        return not (self.policy is Policy.LRU and self.ways > MAX_LRU_WAYS)

    @property
    def ways_label(self) -> str:
        return "full" if self.ways == self.entries else str(self.ways)


def make_points(entries: list[int], ways: list[int | None], policies: list[Policy], pwcs: list[int],
                base: MMUConfig) -> list[Point]:
    """Every combination, each once (``None`` ways: fully associative); each must be a valid DTLB for the
    model (the hardware's LRU way limit does not apply: the replay simulates any geometry)."""
    points = {}
    for pwc in pwcs:
        for w in ways:
            for policy in policies:
                for n in entries:
                    p = Point(n, n if w is None else w, policy, pwc)
                    try:
                        TLBConfig(p.entries, p.ways, p.policy, base.dtlb.superpage_entries, model_only=True)
                    except UserError as e:
                        raise UserError(f"--entries {n} --ways {p.ways_label} --policy {policy.value}: {e}") from None
                    points.setdefault(p, None)
    return list(points)


@dataclass
class Row:
    """The figures of one :class:`Point`."""

    point: Point
    method: str  # how the row was made: "compiled replay"
    fetches: int  # ITLB lookups
    data: int  # DTLB lookups
    translations: int  # every access, non-canonical ones included
    itlb_misses: int
    dtlb_misses: int
    walks: int
    dram_reads: int
    dram_writes: int
    cycles: int
    walk_shapes: Counter = field(repr=False)

    @property
    def itlb_hit_rate(self) -> float | None:
        return 1 - self.itlb_misses / self.fetches if self.fetches else None

    @property
    def dtlb_hit_rate(self) -> float | None:
        return 1 - self.dtlb_misses / self.data if self.data else None

    @property
    def reads_per_walk(self) -> float | None:
        return self.dram_reads / self.walks if self.walks else None

    @property
    def cycles_per_translation(self) -> float | None:
        return self.cycles / self.translations if self.translations else None

    def to_json(self, model: CycleModel) -> dict:
        p = self.point
        latency = Counter()
        for (r, w), n in self.walk_shapes.items():
            latency[model.miss(r, w)] += n
        return {
            "entries": p.entries, "ways": p.ways, "policy": p.policy.value, "pwc": p.pwc, "method": self.method,
            "buildable": p.buildable, "itlb_misses": self.itlb_misses, "dtlb_misses": self.dtlb_misses,
            "itlb_hit_rate": self.itlb_hit_rate, "dtlb_hit_rate": self.dtlb_hit_rate, "walks": self.walks,
            "dram_reads": self.dram_reads, "dram_writes": self.dram_writes, "reads_per_walk": self.reads_per_walk,
            "cycles": self.cycles, "cycles_per_translation": self.cycles_per_translation,
            "miss_latency": {str(c): latency[c] for c in sorted(latency)},
        }


class LRUStack:
    """Which data accesses miss an LRU DTLB of ``sets`` sets, for every number of ways (module docstring).

    Per-set stack distances: the DTLB stream stably sorted by set puts each set's accesses together in
    their order, and a page belongs to one set only, so the distance computed over the sorted stream is
    the distance within the page's set.  An LRU set of W ways holds its W most recently used pages, so
    one pass gives every associativity of this set count (``sets * W`` entries).

    ``index``: positions in the trace of the DTLB's lookups (canonical reads and writes), in trace order;
    ``distance``: their LRU stack distances over the pages of their set; ``first_write``: the first write
    to each page.
    """

    def __init__(self, trace: Trace, sets: int = 1) -> None:
        canonical = canonical_mask(trace.vaddr)
        self.index = np.flatnonzero(canonical & (trace.access != Access.FETCH))
        self.sets = sets
        pages = (trace.vaddr[self.index] >> np.uint64(PAGE_SHIFT)) & _VPN_MASK
        order = np.argsort(pages & np.uint64(sets - 1), kind="stable")
        self.distance = np.empty(len(pages), np.int64)
        self.distance[order] = stack_distances(pages[order])
        writes = np.flatnonzero(trace.access[self.index] == Access.WRITE)
        _, first = np.unique(pages[writes], return_index=True)
        self.first_write = np.zeros(len(self.index), bool)
        self.first_write[writes[first]] = True
        self._warm = self.distance[~self.first_write]  # hits at the ways their distance is below

    def misses(self, ways) -> np.ndarray:
        """DTLB misses at each of ``ways`` ways per set (fully associative: ways = entries)."""
        return len(self.index) - lru_hits(self._warm, ways)

    def miss_mask(self, ways: int) -> np.ndarray:
        """Which of the DTLB's lookups (``index``) miss at ``ways`` ways per set."""
        return (self.distance >= ways) | self.first_write


@dataclass
class SweepResult:
    trace: Trace
    base: MMUConfig
    model: CycleModel
    fetches: int  # ITLB lookups
    data: int  # DTLB lookups
    rows: list[Row]
    lru: LRUStack  # the stack distances of the DTLB stream: the LRU curve for every size


def sweep(trace: Trace, base: MMUConfig, points: list[Point], *, progress: bool = False) -> SweepResult:
    """Measure every point (module docstring); ``progress`` shows a bar over the points."""
    model = CycleModel.for_config(base)
    canonical = canonical_mask(trace.vaddr)
    fetches = int(np.count_nonzero(canonical & (trace.access == Access.FETCH)))
    data = int(np.count_nonzero(canonical)) - fetches
    rows = []
    with progress_bar(len(points), f"sweep {Path(trace.name).name}", "config", show=progress) as bar:
        bar.set_postfix_str("stack distances")
        lru = LRUStack(trace)
        for p in points:
            bar.set_postfix_str(f"{p.entries} entries, {p.ways_label} ways, {p.policy.value}, PWC {p.pwc}")
            cfg = base.replace(pwc_entries=p.pwc, dtlb=TLBConfig(p.entries, p.ways, p.policy,
                                                                base.dtlb.superpage_entries, model_only=True))
            r = replay_compiled(trace, cfg).result()
            rows.append(Row(p, "compiled replay", fetches, data, len(trace), r.itlb_misses, r.dtlb_misses, r.walks,
                            r.dram_reads, r.counters["mem_writes"], model.total(len(trace), r.walk_shapes),
                            r.walk_shapes))
            bar.update()
    return SweepResult(trace, base, model, fetches, data, rows, lru)


# --- output -------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_table(result: SweepResult) -> str:
    t, itlb = result.trace, result.base.itlb
    lines = [
        f"trace   {t.name}: {len(t):,} page accesses ({result.fetches:,} fetches, {result.data:,} reads and writes), "
        f"{len(np.unique(t.vaddr >> np.uint64(PAGE_SHIFT))):,} pages",
        f"ITLB    {itlb.entries} entries, {itlb.ways} ways, {itlb.policy.value} in every row (not varied)",
        f"timing  {result.model.describe()}",
        "",
        f"{'DTLB entries':>12} {'ways':>5} {'policy':<7}{'PWC':>4} {'ITLB hits':>10} {'DTLB hits':>10} "
        f"{'walks':>9} {'reads/walk':>11} {'cycles/translation':>19}  from",
    ]
    ideal = False
    for row in result.rows:
        p = row.point
        mark = "" if p.buildable else " *"
        ideal |= not p.buildable
        lines.append(f"{p.entries:>12} {p.ways_label:>5} {p.policy.value:<7}{p.pwc:>4} {_pct(row.itlb_hit_rate):>10} "
                     f"{_pct(row.dtlb_hit_rate):>10} {row.walks:>9,} {_num(row.reads_per_walk, 2):>11} "
                     f"{_num(row.cycles_per_translation, 3):>19}  {row.method}{mark}")
    if ideal:
        lines.append(f"* fully associative LRU beyond {MAX_LRU_WAYS} ways: an ideal the hardware does not offer "
                     "(model/config.py MAX_LRU_WAYS)")
    return "\n".join(lines)


def to_json(result: SweepResult, plots: list[Path]) -> dict:
    t, itlb = result.trace, result.base.itlb
    return {
        "trace": t.name, "accesses": len(t), "fetches": result.fetches, "data": result.data,
        "itlb": {"entries": itlb.entries, "ways": itlb.ways, "policy": itlb.policy.value},
        "timing": {"dram_latency": result.model.dram_latency, "hit_cycles": CycleModel.HIT,
                   "miss_cycles": f"{CycleModel.MISS_FIXED} + reads * (dram_latency + 1) + writes"},
        "rows": [row.to_json(result.model) for row in result.rows],
        "plots": [str(p) for p in plots],
    }


def _nan(x: float | None) -> float:
    """None (no walks, no lookups) as NaN, which matplotlib leaves out of a line."""
    return np.nan if x is None else x


# Why the direct-mapped panels show the policies on top of each other.
DIRECT_MAPPED_NOTE = "\n(one way per set: no policy has a choice, so they coincide)"


def _ways_title(ways: int | None) -> str:
    return {None: "fully associative", 1: "direct-mapped"}.get(ways, f"{ways}-way")


def plot(result: SweepResult, ways: list[int | None], out: Path) -> list[Path]:
    """Write hit_rate.png, miss_latency.png and pwc.png into the directory ``out``; returns their paths."""
    from matplotlib.figure import Figure  # imported here: a second of start-up that only plots need
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    rows = result.rows
    entries = sorted({r.point.entries for r in rows})
    policies = list(dict.fromkeys(r.point.policy for r in rows))
    pwcs = list(dict.fromkeys(r.point.pwc for r in rows))
    by = {(r.point.entries, r.point.ways, r.point.policy, r.point.pwc): r for r in rows}

    def size_axis(ax, ticks):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("DTLB entries")
        ax.grid(True, alpha=0.3)

    name = Path(result.trace.name).name
    paths = []

    # Hit rate vs size, one panel per associativity, one line per policy, and the LRU curve of every size.
    fig = Figure(figsize=(4.2 * len(ways), 4.2), layout="constrained")
    axes = fig.subplots(1, len(ways), sharey=True, squeeze=False)[0]
    sizes = np.arange(1, entries[-1] + 1)
    curve = 100 * (1 - result.lru.misses(sizes) / result.data) if result.data else None
    for ax, w in zip(axes, ways):
        if curve is not None:
            ax.plot(sizes, curve, color="0.6", lw=1, ls="--", label="LRU, fully assoc., every size")
        for policy in policies:
            found = [by.get((n, n if w is None else w, policy, pwcs[0])) for n in entries]
            pts = [(r.point.entries, r.dtlb_hit_rate) for r in found if r and r.dtlb_hit_rate is not None]
            if pts:
                ax.plot([n for n, _ in pts], [100 * h for _, h in pts], marker="o", label=policy.value)
        size_axis(ax, [1 << i for i in range(entries[-1].bit_length())])
        ax.set_title(_ways_title(w) + (DIRECT_MAPPED_NOTE if w == 1 else ""), fontsize="medium")
    axes[0].set_ylabel("DTLB hit rate (%)")
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize="small")
    fig.suptitle(f"{name}: DTLB hit rate vs size")
    paths.append(out / "hit_rate.png")
    fig.savefig(paths[-1], dpi=110)

    # Miss latency histogram, one series per page-walk-cache size, all DTLB configurations pooled.  The
    # latencies are few and far apart (a DRAM read more costs L + 1), so each gets a slot of its own.
    model = result.model
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    latency = {pwc: Counter() for pwc in pwcs}
    for r in rows:
        for (reads, writes), n in r.walk_shapes.items():
            latency[r.point.pwc][model.miss(reads, writes)] += n
    slots = sorted(set().union(*latency.values()))
    gap = min((b - a for a, b in zip(slots, slots[1:])), default=1)
    width = 0.8 * gap / len(pwcs)
    for i, pwc in enumerate(pwcs):
        total = sum(latency[pwc].values()) or 1
        bars = ax.bar([c - 0.4 * gap + width * (i + 0.5) for c in slots],
                      [100 * latency[pwc][c] / total for c in slots], width,
                      label="PWC off" if pwc == 0 else f"PWC {pwc} entries")
        ax.bar_label(bars, labels=[str(latency[pwc][c]) if latency[pwc][c] else "" for c in slots],
                     fontsize="x-small", rotation=90, padding=2)
    ax.set_xticks(slots, [str(c) for c in slots])
    ax.margins(y=0.15)
    ax.set_xlabel(f"cycles, accept to response: {model.MISS_FIXED} + {model.dram_latency + 1} x DRAM reads "
                  "+ A/D writes")
    ax.set_ylabel("share of walks (%); the number of walks on each bar")
    ax.set_title(f"{name}: latency of a TLB miss\n(DRAM latency {model.dram_latency}; the walks of "
                 f"{len(rows) // len(pwcs)} DTLB configurations pooled)", fontsize="medium")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    paths.append(out / "miss_latency.png")
    fig.savefig(paths[-1], dpi=110)

    # Page-walk cache on vs off: a column per associativity, DRAM reads per walk above and cycles per
    # translation below; colour = page-walk-cache size, line style = replacement policy.
    labels = list(dict.fromkeys(r.point.ways_label for r in rows))
    fig = Figure(figsize=(3.6 * len(labels), 6.4), layout="constrained")
    grid = fig.subplots(2, len(labels), sharex=True, sharey="row", squeeze=False)
    styles = {policy: ("-", "--", ":", "-.")[i % 4] for i, policy in enumerate(policies)}
    for col, w in enumerate(labels):
        top, bottom = grid[0][col], grid[1][col]
        direct = all(r.point.ways == 1 for r in rows if r.point.ways_label == w)
        for pwc in pwcs:
            for policy in policies[:1] if direct else policies:
                line = sorted((r for r in rows if r.point.pwc == pwc and r.point.policy is policy
                               and r.point.ways_label == w), key=lambda r: r.point.entries)
                if not line:
                    continue
                n = [r.point.entries for r in line]
                kw = dict(color=f"C{pwcs.index(pwc)}", ls=styles[policy], marker=".", lw=1.2)
                top.plot(n, [_nan(r.reads_per_walk) for r in line], **kw)
                bottom.plot(n, [_nan(r.cycles_per_translation) for r in line], **kw)
        top.set_title(_ways_title(None if w == "full" else int(w)) + (DIRECT_MAPPED_NOTE if direct else ""),
                      fontsize="medium")
        for ax in (top, bottom):
            size_axis(ax, entries)
        top.set_ylim(bottom=0)
    grid[0][0].set_ylabel("DRAM reads per walk")
    grid[1][0].set_ylabel("cycles per translation")
    handles = [Line2D([], [], color=f"C{i}", label="PWC off" if pwc == 0 else f"PWC {pwc} entries")
               for i, pwc in enumerate(pwcs)]
    handles += [Line2D([], [], color="0.3", ls=styles[policy], label=policy.value) for policy in policies]
    grid[0][-1].legend(handles=handles, fontsize="small")
    fig.suptitle(f"{name}: page-walk cache on vs off, one panel per DTLB associativity")
    paths.append(out / "pwc.png")
    fig.savefig(paths[-1], dpi=110)
    return paths
