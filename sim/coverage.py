"""Functional coverage built on the bug classes the regression must reach, and the gate `mmu sim` applies.

Each group counts one kind of event; its bins are the union of small products
(never one big cross product), minus the bins the contract (docs/reference.md)
makes impossible, each excluded by a named rule:

==========  ==========================================================================================
response    every checked answer: ok by size x access x mode x hit/miss; protection by size; not
            present and reserved by level; non-canonical (x access x mode throughout)
flush       a TLB entry present when a control operation came: operation x size x global x PCID
            (the entry's, against the operation's: same/other) x outcome, counted only once the
            outcome is *seen*: a kept entry hits later, a dropped one misses on its page before the
            next flush (for flush-by-VA only the entries covering the address count)
reserved    a reserved-bit fault by kind (M..51, XD without NXE, PS in a PML4E, frame bits of a
            2 MiB / 1 GiB leaf) x level
blocked     a TLB match that cannot complete, by cause (clean page written, R/W, U/S with SMEP
            and SMAP, NX) x size: the request re-walks
arrival     a control operation accepted while a request was in flight, by operation x where the
            request was: its lookup cycle (hit or miss), the walker's READ, WAIT, A/D write, DONE,
            or the answer waiting in RESP
cr3         a TLB hit on an entry filled before the last CR3 write: that write (flushing or not)
            x global x filled under this PCID or another x size
victim      a fill that replaced a valid entry: policy x array (4 KiB main, superpage) x way, for
            the geometries of the configurations that ran
==========  ==========================================================================================

``CoveredRefMMU`` (the scoreboard's reference MMU) counts every group but
``arrival``, which needs the cycles of the bus and is counted by the scoreboard
(``count_arrivals``).  Counts travel in each test's result record; ``mmu sim``
adds them over all tests and seeds, prints ``report`` and fails when
``missed`` is not empty.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

from model.reference.ref_mmu import RefMMU
from model.reference.ref_walker import access_allowed
from model.x86.pte import PF_P, PF_RSVD, PS, XD, Access, FaultKind, Level, PageSize
from model.x86.tlbflush import CR3_NOFLUSH, CtlOp

ACCESSES = ("read", "write", "fetch")
MODES = ("user", "supervisor")
SIZES = ("4K", "2M", "1G")
LEVELS = ("PML4", "PDPT", "PD", "PT")
OPS = ("FLUSH_VA", "FLUSH_PCID", "FLUSH_ALL", "FLUSH_ALL_KEEP_GLOBAL", "WRITE_CR3", "WRITE_CR3_NOFLUSH")
GLOBAL = ("global", "nonglobal")
RESERVED = ("high", "xd", "ps", "frame2m", "frame1g")
STATES = ("lookup-hit", "lookup-miss", "READ", "WAIT", "AD", "DONE", "RESP")
POLICIES = ("lru", "plru", "fifo", "random")


@dataclass(frozen=True)
class Group:
    name: str
    parts: tuple  # each part: a tuple of value tuples whose product is a set of bins
    rules: tuple = ()  # (reason, predicate over a bin's values): the first that matches excludes it

    def all_bins(self):
        for part in self.parts:
            yield from itertools.product(*part)

    def exclusion(self, values: tuple) -> str | None:
        for reason, rule in self.rules:
            if rule(*values):
                return reason
        return None

    def reachable(self) -> list[str]:
        return [key(self.name, *v) for v in self.all_bins() if self.exclusion(v) is None]


def key(group: str, *values) -> str:
    return f"{group}: " + " ".join(values)


_FLUSH_RULES = (
    ("a no-flush CR3 write (PCIDE=1) drops nothing", lambda op, s, g, p, o: op == "WRITE_CR3_NOFLUSH" and o == "dropped"),
    ("flush-all drops every entry", lambda op, s, g, p, o: op == "FLUSH_ALL" and o == "kept"),
    ("flush-all-but-global, flush-by-PCID and a CR3 write keep global entries",
     lambda op, s, g, p, o: op in ("FLUSH_ALL_KEEP_GLOBAL", "FLUSH_PCID", "WRITE_CR3") and g == "global"
     and o == "dropped"),
    ("flush-all-but-global drops every non-global entry",
     lambda op, s, g, p, o: op == "FLUSH_ALL_KEEP_GLOBAL" and g == "nonglobal" and o == "kept"),
    ("flush-by-PCID and a flushing CR3 write drop the non-global entries of their PCID",
     lambda op, s, g, p, o: op in ("FLUSH_PCID", "WRITE_CR3") and (g, p, o) == ("nonglobal", "same", "kept")),
    ("flush-by-PCID keeps other PCIDs' entries",
     lambda op, s, g, p, o: op == "FLUSH_PCID" and (g, p, o) == ("nonglobal", "other", "dropped")),
    ("flush-by-VA drops the covering entries of its PCID and global ones, never another PCID's",
     lambda op, s, g, p, o: op == "FLUSH_VA" and o == ("kept" if g == "global" or p == "same" else "dropped")),
)

GROUPS = (
    Group("response", (
        (("ok",), SIZES, ACCESSES, MODES, ("hit", "miss")),
        (("protection",), SIZES, ACCESSES, MODES),
        (("not_present", "reserved"), LEVELS, ACCESSES, MODES),
        (("noncanonical",), ACCESSES, MODES),
    )),
    Group("flush", ((OPS, SIZES, GLOBAL, ("same", "other"), ("dropped", "kept")),), _FLUSH_RULES),
    Group("reserved", ((RESERVED, LEVELS),), (
        ("PS is reserved only in a PML4E (below, it selects a huge page)", lambda k, lv: k == "ps" and lv != "PML4"),
        ("frame bits 20:13 are reserved only in a 2 MiB leaf (a PDE)", lambda k, lv: k == "frame2m" and lv != "PD"),
        ("frame bits 29:13 are reserved only in a 1 GiB leaf (a PDPTE)",
         lambda k, lv: k == "frame1g" and lv != "PDPT"),
    )),
    Group("blocked", ((("dirty", "rw", "us", "nx"), SIZES),), (
        ("no ITLB entry has NX: a fetch fills only when allowed, so with XD set only under NXE=0, where XD is a "
         "reserved bit", lambda cause, s: cause == "nx"),
    )),
    Group("arrival", ((OPS, STATES),), (
        ("ctl.ready is low while an answer waits in RESP, except for the second cycle of a flush-by-VA",
         lambda op, st: st == "RESP" and op != "FLUSH_VA"),
        ("a flush-by-VA reads the TLB set in the cycle before it is accepted, and that read port is the one a "
         "request's acceptance uses: it cannot be accepted in the lookup cycle",
         lambda op, st: op == "FLUSH_VA" and st.startswith("lookup")),
    )),
    Group("cr3", ((("flush", "noflush"), GLOBAL, ("this", "other"), SIZES),), (
        ("a non-global entry matches only the PCID it was filled under",
         lambda w, g, p, s: g == "nonglobal" and p == "other"),
        ("a flushing CR3 write drops the non-global entries of the PCID it switches to",
         lambda w, g, p, s: (w, g) == ("flush", "nonglobal")),
    )),
)


def victim_group(configs) -> Group:
    """Replacement victims for the TLB geometries of ``configs`` (``MMUConfig``s): policy x array x way."""
    ways: dict[tuple[str, str], int] = {}
    for cfg in configs:
        for t in (cfg.itlb, cfg.dtlb):
            for array, n in (("main", t.ways), ("superpage", t.superpage_entries)):
                k = (t.policy.value, array)
                ways[k] = max(ways.get(k, 0), n)
    parts = tuple(((p,), (a,), tuple(f"way{w}" for w in range(n))) for (p, a), n in sorted(ways.items()) if n > 1)
    return Group("victim", parts)


def groups(configs) -> tuple[Group, ...]:
    return GROUPS + (victim_group(configs),)


def missed(counts: Counter, configs) -> list[str]:
    """The reachable bins never hit (the gate of `mmu sim`)."""
    return [k for g in groups(configs) for k in g.reachable() if not counts.get(k)]


def report(counts: Counter, configs) -> str:
    """Per group: bins hit of the reachable ones, what is excluded and why, and every bin never hit."""
    gs = groups(configs)
    reachable = [k for g in gs for k in g.reachable()]
    known = set(reachable)
    miss = [k for k in reachable if not counts.get(k)]
    lines = [f"functional coverage: {len(reachable) - len(miss)} of {len(reachable)} reachable bins hit "
             f"({100.0 * (len(reachable) - len(miss)) / max(1, len(reachable)):.1f} %), "
             f"{sum(counts.values())} events binned"]
    for g in gs:
        r = g.reachable()
        hit = sum(1 for k in r if counts.get(k))
        excluded = Counter(g.exclusion(v) for v in g.all_bins())
        excluded.pop(None, None)
        lines.append(f"  {g.name:<9} {hit:>4} of {len(r):>4}" + (f"   ({sum(excluded.values())} excluded)"
                                                                  if excluded else ""))
        for reason, _ in g.rules:
            lines.append(f"      {excluded[reason]:>4}  {reason}")
    impossible = sorted(k for k in counts if k not in known and not k.startswith("victim:"))
    if impossible:  # the scoreboard would have failed first; shown so that it cannot go unnoticed
        lines.append(f"  IMPOSSIBLE bins that were hit ({len(impossible)}): " + "; ".join(impossible))
    if miss:
        lines.append(f"  bins never hit ({len(miss)}):")
        lines.extend(f"    {k}" for k in miss)
    else:
        lines.append("  every reachable bin was hit")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# counting


def fault_class(fault: int, error_code: int) -> str:
    """A short name for the kind of answer: ok, noncanonical, not_present, protection, reserved."""
    if fault == FaultKind.NONE:
        return "ok"
    if fault == FaultKind.NONCANONICAL:
        return "noncanonical"
    if error_code & PF_RSVD:
        return "reserved"
    if error_code & PF_P:
        return "protection"
    return "not_present"


def response_key(resp, access: Access, user: bool) -> str:
    """The response bin of one answer of ``RefMMU.translate`` (its ``walk`` says where it stopped)."""
    cls = fault_class(resp.fault, resp.error_code)
    am = (access.name.lower(), "user" if user else "supervisor")
    if cls == "ok":
        return key("response", cls, PageSize(resp.size).label, *am, "hit" if resp.tlb_hit else "miss")
    if cls == "noncanonical":
        return key("response", cls, *am)
    level = resp.walk.reads[-1][0]  # the entry the walk stopped at (protection: the leaf)
    if cls == "protection":
        return key("response", cls, {Level.PT: "4K", Level.PD: "2M", Level.PDPT: "1G"}[level], *am)
    return key("response", cls, level.name, *am)


def reserved_kinds(level: Level, value: int, maxphyaddr: int, nxe: bool) -> list[str]:
    """Which kinds of reserved bit a present entry at ``level`` has (model/x86/pte.py: reserved_mask)."""
    kinds = []
    if value & ((1 << 52) - 1) >> maxphyaddr << maxphyaddr:
        kinds.append("high")
    if not nxe and value & XD:
        kinds.append("xd")
    if level == Level.PML4 and value & PS:
        kinds.append("ps")
    if level == Level.PD and value & PS and value & 0x1F_E000:
        kinds.append("frame2m")
    if level == Level.PDPT and value & PS and value & 0x3FFF_E000:
        kinds.append("frame1g")
    return kinds


def _size(entry) -> str:
    return PageSize(entry.size).label


def _covers(entry, vaddr: int) -> bool:
    return entry.tag == ((vaddr >> 12) & ((1 << 36) - 1)) >> (PageSize(entry.size).shift - 12)


def _valid(tlb) -> list:
    return [e for array in (tlb.main, tlb.superpages) for row in array.rows for e in row if e is not None]


class CoveredRefMMU(RefMMU):
    """The reference MMU, counting into ``bins`` the events only it can see: answers, flush outcomes (once
    seen), reserved-bit kinds, blocked matches, hits across CR3 writes and replacement victims."""

    PENDING_LIMIT = 256

    def __init__(self, cfg, mem, ctrl, *, bins: Counter) -> None:
        super().__init__(cfg, mem, ctrl)
        self.bins = bins
        self.epoch = 0  # CR3 writes so far
        self.last_cr3 = "flush"
        self._born: dict[int, tuple] = {}  # id(entry) -> (entry, epoch it was filled in)
        self._kept: dict[int, tuple] = {}  # id(entry) -> (entry, flush bins waiting for a hit)
        self._dropped: dict[int, tuple] = {}  # id(entry) -> (entry, tlb, flush bins waiting for a miss)

    def translate(self, vaddr, access, user, id=0, *, flushes_during_walk=()):
        access = Access(access)
        tlb = self.itlb if access == Access.FETCH else self.dtlb
        pcid = self.ctrl.pcid
        canonical = (vaddr >> 47) in (0, 0x1FFFF)
        before = tlb.lookup(vaddr, pcid) if canonical else None
        blocked = before is not None and not ((access != Access.WRITE or before.dirty) and access_allowed(
            before.writable, before.user, before.nx, access, user, self.ctrl))
        # seen outcomes first: control operations accepted during this request apply after its lookup
        if before is not None and not blocked:
            self._on_hit(before, pcid)
        elif canonical:
            self._on_miss(tlb, vaddr, pcid)
        rows = (list(tlb.main.rows[((vaddr >> 12) & (tlb.cfg.sets - 1))]), list(tlb.superpages.rows[0]))
        resp = super().translate(vaddr, access, user, id, flushes_during_walk=flushes_during_walk)
        bins = self.bins
        bins[response_key(resp, access, user)] += 1
        if blocked:
            bins[key("blocked", self._blocked_cause(before, access, user), _size(before))] += 1
        if resp.fault == FaultKind.PAGE and resp.error_code & PF_RSVD:
            level, _, value = resp.walk.reads[-1]
            for kind in reserved_kinds(level, value, self.cfg.maxphyaddr, self.ctrl.nxe):
                bins[key("reserved", kind, level.name)] += 1
        if resp.fault == FaultKind.NONE and not resp.tlb_hit and not flushes_during_walk:
            self._on_fill(tlb, vaddr, pcid, rows)
        return resp

    def _blocked_cause(self, e, access: Access, user: bool) -> str:
        c = self.ctrl
        if access == Access.FETCH:
            return "nx" if c.nxe and e.nx else "us"
        if not access_allowed(True, e.user, False, access, user, c):
            return "us"
        return "rw" if not access_allowed(e.writable, e.user, e.nx, access, user, c) else "dirty"

    def _on_hit(self, e, pcid: int) -> None:
        kept = self._kept.pop(id(e), None)
        if kept:
            self.bins.update(kept[1])
        born = self._born.get(id(e))
        if born and born[1] < self.epoch and self.last_cr3:
            self.bins[key("cr3", self.last_cr3, "global" if e.global_ else "nonglobal",
                          "this" if e.pcid == pcid else "other", _size(e))] += 1

    def _on_miss(self, tlb, vaddr: int, pcid: int) -> None:
        for k, (e, t, bins) in list(self._dropped.items()):
            if t is tlb and _covers(e, vaddr) and (e.global_ or e.pcid == pcid):
                self.bins.update(bins)
                del self._dropped[k]

    def _on_fill(self, tlb, vaddr: int, pcid: int, rows) -> None:
        e = tlb.lookup(vaddr, pcid)
        if e is None:
            return
        self._born[id(e)] = (e, self.epoch)
        if len(self._born) > self.PENDING_LIMIT:
            self._born = {k: v for k, v in self._born.items() if v[0].valid}
        row = rows[e.size != PageSize.SIZE_4K]
        old = row[e.way]
        if None not in row and not (old.tag == e.tag and old.size == e.size):
            array = "main" if e.size == PageSize.SIZE_4K else "superpage"
            self.bins[key("victim", tlb.cfg.policy.value, array, f"way{e.way}")] += 1

    def set_flags(self, **flags) -> None:
        """A PCIDE change ends what the last CR3 write says about the current PCID (no cr3 bins until the next)."""
        if flags.get("pcide") is not None and bool(flags["pcide"]) != self.ctrl.pcide:
            self.epoch += 1
            self.last_cr3 = None
        super().set_flags(**flags)

    def ctl(self, op, value) -> None:
        op = CtlOp(op)
        c = self.ctrl
        if op is CtlOp.WRITE_CR3:
            noflush = bool(value & CR3_NOFLUSH) and c.pcide
            name, target = ("WRITE_CR3_NOFLUSH" if noflush else "WRITE_CR3"), (value & 0xFFF if c.pcide else 0)
        else:
            name, target = op.name, (value & 0xFFF if op is CtlOp.FLUSH_PCID else c.pcid)
        present = [(t, e) for t in (self.itlb, self.dtlb) for e in _valid(t)
                   if op is not CtlOp.FLUSH_VA or _covers(e, value)]
        super().ctl(op, value)
        if name != "WRITE_CR3_NOFLUSH":
            self._dropped.clear()  # a later miss would no longer show what this flush dropped
        for t, e in present:
            b = key("flush", name, _size(e), "global" if e.global_ else "nonglobal",
                    "same" if e.pcid == target else "other", "kept" if e.valid else "dropped")
            if e.valid:
                self._kept.setdefault(id(e), (e, set()))[1].add(b)
            else:
                self._dropped.setdefault(id(e), (e, t, set()))[2].add(b)
        self._kept = {k: v for k, v in self._kept.items() if v[0].valid}
        if op is CtlOp.WRITE_CR3:
            self.epoch += 1
            self.last_cr3 = "noflush" if name == "WRITE_CR3_NOFLUSH" else "flush"


def count_arrivals(bins: Counter, req, resp, during, reads, writes, pcide: bool) -> None:
    """The arrival bins of the control operations accepted while ``req`` was in flight (scoreboard side:
    it alone knows the cycles).  ``reads``/``writes`` are the request's memory transactions (``sim.dram.MemOp``:
    ``cycle`` accepted, ``done`` answered)."""
    if not during or resp.fault == FaultKind.NONCANONICAL:
        return
    lookup = req.accept_cycle + 1
    spans = []  # (last cycle, state) in order
    if not resp.tlb_hit:
        end = lookup
        for op in reads:
            spans += [(op.cycle, "READ"), (op.done, "WAIT")]
            end = op.done
        if writes:
            end = writes[-1].cycle
            spans.append((end, "AD"))
        spans.append((end + 1, "DONE"))
    for t in during:
        c = t.accept_cycle
        state = ("lookup-hit" if resp.tlb_hit else "lookup-miss") if c == lookup else \
            next((s for last, s in spans if c <= last), "RESP")
        op = CtlOp(t.op)
        name = "WRITE_CR3_NOFLUSH" if op is CtlOp.WRITE_CR3 and t.value & CR3_NOFLUSH and pcide else op.name
        bins[key("arrival", name, state)] += 1
