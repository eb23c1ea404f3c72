"""The scoreboard: every hardware response checked against the reference MMU (``model.reference.ref_mmu.RefMMU``).

Simulator-agnostic: it sees transactions (``sim.transactions``) and the DRAM log
(``sim.dram.DRAMStore``), never a signal, so the cocotb testbench on Icarus
(``sim.mmu_driver``) and the Amaranth-simulator bench (``sim.pysim``) feed the same
checks.

What is compared, per response (docs/reference.md is the contract):

- the id echoed (against the request's id),
- fault kind; without a fault the physical address and the page size; with a
  page fault the error code (a faulting response's paddr and size are not part
  of the contract and are not compared, unless ``whole_payload`` holds the
  design to the reference's values there too),
- TLB hit or miss,
- the DRAM reads of the walk (entry addresses, in order) against ``walk.reads``:
  a wrong page-walk-cache start shows up here first,
- the A/D writes (address, value, order) against ``walk.writes``.

Ordering.  The reference is run lazily, when the hardware answers request N,
and is fed the control-port operations in the order the hardware accepted
them.  Cycles are rising edges; a handshake "at cycle c" is sampled at edge c.
An operation accepted at or before the cycle request N was accepted is applied
(with ``RefMMU.ctl``) before N is predicted (the hardware orders an operation
accepted in cycle c before every request accepted at c or later, hw/mmu.py);
one accepted after N's acceptance, up to and including the cycle of N's
response, is passed as ``flushes_during_walk`` of N (the reference applies it
after N, and a walk fills nothing; for a TLB hit that is just "after N");
later ones wait for the next request.

Memory.  The hardware's writes sit in ``DRAMStore``'s overlay until request N
is checked: the reference applies its own A/D writes to ``PhysMem`` while
predicting N, the two write lists are compared, and the hardware's copies are
retired from the overlay.  So the reference never sees an A bit set by the
hardware before it has predicted the request that sets it.

On the first difference ``ScoreboardMismatch`` is raised with the request, both
answers, the reads and writes, the flushes involved, recent history, the seed
and the replay command.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from model.reference.ref_mmu import COUNTERS as REF_COUNTERS
from model.reference.ref_walker import ControlRegs
from model.x86.pte import FaultKind, PageSize
from sim import coverage
from sim.coverage import fault_class
from sim.dram import DRAMStore, MemOp
from sim.transactions import CtlTxn, Flags, Request, Response, describe_answer

# Counters the hardware and the reference define the same way (walk_cycles is timing: hardware only).
COMPARED_COUNTERS = tuple(REF_COUNTERS)


class ScoreboardMismatch(AssertionError):
    """The hardware and the reference MMU disagree."""


@dataclass
class ScoreboardStats:
    checked: int = 0
    hits: int = 0
    misses: int = 0
    walks: int = 0
    walk_reads: int = 0
    walk_writes: int = 0
    pwc_hits: int = 0
    miss_latency_total: int = 0  # cycles from acceptance to response, summed over walks
    flushes: Counter = field(default_factory=Counter)
    flushes_during_walk: int = 0
    faults: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)
    accesses: Counter = field(default_factory=Counter)
    tlb_misses: Counter = field(default_factory=Counter)  # by access kind: read, write, fetch
    coverage: Counter = field(default_factory=Counter)  # sim/coverage.py bins

    def to_dict(self) -> dict:
        return {
            "checked": self.checked, "hits": self.hits, "misses": self.misses, "walks": self.walks,
            "walk_reads": self.walk_reads, "walk_writes": self.walk_writes, "pwc_hits": self.pwc_hits,
            "miss_latency_total": self.miss_latency_total, "flushes": dict(self.flushes),
            "flushes_during_walk": self.flushes_during_walk, "faults": dict(self.faults),
            "sizes": dict(self.sizes), "accesses": dict(self.accesses), "tlb_misses": dict(self.tlb_misses),
            "coverage": dict(self.coverage),
        }


class Scoreboard:
    def __init__(self, cfg, mem, store: DRAMStore, *, seed: int, replay: str = "", config_name: str = "",
                 flags: Flags = Flags(), cr3: int = 0, check_reads: bool = True, whole_payload: bool = False) -> None:
        self.cfg = cfg
        self.whole_payload = whole_payload
        self.mem = mem
        self.store = store
        self.seed = seed
        self.replay = replay
        self.config_name = config_name
        self.check_reads = check_reads
        self.stats = ScoreboardStats()
        self.ref = coverage.CoveredRefMMU(cfg, mem, ControlRegs(cr3=cr3, **flags.as_dict()),
                                          bins=self.stats.coverage)
        self.pending_ctl: deque[CtlTxn] = deque()
        self.history: deque[str] = deque(maxlen=12)
        self.last: tuple[Request, Response] | None = None
        self.drop_ctl_op = None  # fault injection for the self-tests

    # --- events from the testbench ------------------------------------------------

    def on_request(self, req: Request) -> None:
        self.stats.accesses[req.access.name.lower()] += 1

    def on_ctl(self, txn: CtlTxn) -> None:
        if self.drop_ctl_op is not None and txn.op == self.drop_ctl_op:
            self.drop_ctl_op = None  # fault injection (self-test): the reference never hears of it
            self.history.append(f"ctl {txn} DROPPED by fault injection")
            return
        self.pending_ctl.append(txn)
        self.stats.flushes[txn.op.name] += 1

    def on_flags(self, flags: Flags) -> None:
        """Level flags changed while the MMU was idle: every earlier operation applies first."""
        self._apply_ctl_upto(None)
        self.ref.set_flags(**flags.as_dict())
        self.history.append(f"flags {flags.as_dict()}")

    def on_reset(self, flags: Flags, cr3: int = 0) -> None:
        """The hardware was reset: a fresh reference (empty TLBs, PWC, counters) over the same memory."""
        self.pending_ctl.clear()
        committed = self.store.commit_pending()
        self.ref = coverage.CoveredRefMMU(self.cfg, self.mem, ControlRegs(cr3=cr3, **flags.as_dict()),
                                          bins=self.stats.coverage)
        self.history.append(f"reset (committed {len(committed)} unchecked hardware writes)")

    def on_response(self, resp: Response, req: Request) -> None:
        # 1. control operations accepted before this request, or in the same cycle (an operation
        #    accepted in cycle c is ordered before every request accepted at c or later)
        self._apply_ctl_upto(req.accept_cycle)
        # 2. those accepted while it was in flight
        during = []
        while self.pending_ctl and self.pending_ctl[0].accept_cycle <= resp.cycle:
            during.append(self.pending_ctl.popleft())
        # 3. predict
        ref = self.ref.translate(req.vaddr, req.access, req.user, req.id,
                                 flushes_during_walk=[(t.op, t.value) for t in during])
        hw_reads, hw_writes = self.store.claim(resp.cycle)
        problems = self._compare(resp, req, ref, hw_reads, hw_writes)
        if problems:
            raise ScoreboardMismatch(self._report(problems, resp, req, ref, hw_reads, hw_writes, during))
        self.store.retire(hw_writes)
        self._count(resp, req, ref, during, hw_reads, hw_writes)
        for t in during:
            self.history.append(f"ctl {t} (during #{req.seq})")
        self.history.append(f"{req} -> {resp} @cycle {resp.cycle}")
        self.last = (req, resp)

    def _apply_ctl_upto(self, cycle: int | None) -> None:
        while self.pending_ctl and (cycle is None or self.pending_ctl[0].accept_cycle <= cycle):
            t = self.pending_ctl.popleft()
            self.ref.ctl(t.op, t.value)
            self.history.append(f"ctl {t}")

    def flush_pending(self) -> None:
        """Apply every accepted control operation (at the end of a test, before comparing state)."""
        self._apply_ctl_upto(None)

    # --- comparison ------------------------------------------------------------------

    def _compare(self, resp: Response, req: Request, ref, hw_reads: list[MemOp], hw_writes: list[MemOp]):
        problems = []
        if resp.id != req.id:
            problems.append(f"id: hardware echoed {resp.id}, the request had {req.id}")
        if resp.fault != int(ref.fault):
            problems.append("fault kind")
        else:
            if ref.fault == FaultKind.NONE or self.whole_payload:
                if resp.paddr != ref.paddr:
                    problems.append("paddr")
                if resp.size != int(ref.size):
                    problems.append("page size")
            if (ref.fault == FaultKind.PAGE or self.whole_payload) and resp.error_code != ref.error_code:
                problems.append("error code")
        if resp.tlb_hit != ref.tlb_hit:
            problems.append("tlb_hit")
        walk = ref.walk
        exp_reads = [addr for _, addr, _ in walk.reads] if walk else []
        if self.check_reads and [op.addr for op in hw_reads] != exp_reads:
            problems.append("walk reads (entry addresses)")
        exp_writes = list(walk.writes) if walk else []
        if [(op.addr, op.value) for op in hw_writes] != exp_writes:
            problems.append("A/D writes")
        return problems

    def _report(self, problems, resp, req, ref, hw_reads, hw_writes, during) -> str:
        walk = ref.walk
        lines = [
            f"MISMATCH ({', '.join(problems)}) on request {req}, answered @cycle {resp.cycle}",
            f"  hardware : {resp}",
            f"  reference: {describe_answer(int(ref.fault), ref.error_code, ref.paddr, int(ref.size), ref.tlb_hit, ref.id)}"
            + (" (walk started from the PWC)" if ref.pwc_hit else ""),
        ]
        ctrl = self.ref.ctrl
        lines.append(f"  control  : cr3={ctrl.cr3:#x} pcid={ctrl.pcid} wp={int(ctrl.wp)} nxe={int(ctrl.nxe)} "
                     f"smep={int(ctrl.smep)} smap={int(ctrl.smap)} pcide={int(ctrl.pcide)}")
        if during:
            lines.append("  flushes accepted during this request: " + "; ".join(str(t) for t in during))
        lines.append("  DRAM reads  (hardware): " + (", ".join(f"{o.addr:#x}" for o in hw_reads) or "none"))
        if walk:
            lines.append("  walk reads  (reference): " + (", ".join(
                f"{lvl.name}@{addr:#x}={val:#x}" for lvl, addr, val in walk.reads) or "none"))
        else:
            lines.append("  walk reads  (reference): none (TLB hit or non-canonical)")
        lines.append("  DRAM writes (hardware): " + (", ".join(f"{o.addr:#x}<-{o.value:#x}" for o in hw_writes)
                                                     or "none"))
        exp_writes = walk.writes if walk else []
        lines.append("  A/D writes  (reference): " + (", ".join(f"{a:#x}<-{v:#x}" for a, v in exp_writes)
                                                      or "none"))
        if self.history:
            lines.append("  recent history (oldest first):")
            lines.extend(f"    {h}" for h in self.history)
        lines.append(f"  seed: {self.seed}   config: {self.config_name}")
        if self.replay:
            lines.append(f"  replay: {self.replay}")
        return "\n".join(lines)

    def _count(self, resp, req, ref, during, hw_reads, hw_writes) -> None:
        s = self.stats
        s.checked += 1
        if during:
            s.flushes_during_walk += len(during)
        cls = fault_class(resp.fault, resp.error_code)
        s.faults[cls] += 1
        access = req.access.name.lower()
        coverage.count_arrivals(s.coverage, req, resp, during, hw_reads, hw_writes, self.ref.ctrl.pcide)
        if resp.fault == FaultKind.NONE:
            s.sizes[PageSize(resp.size).label] += 1
        if resp.fault == FaultKind.NONCANONICAL:
            return
        if resp.tlb_hit:
            s.hits += 1
        else:
            s.misses += 1
            s.tlb_misses[access] += 1
        if ref.walk is not None:
            s.walks += 1
            s.walk_reads += len(hw_reads)
            s.walk_writes += len(hw_writes)
            s.pwc_hits += int(ref.pwc_hit)
            s.miss_latency_total += resp.cycle - req.accept_cycle

    # --- end of test ----------------------------------------------------------------

    def check_counters(self, hw: dict[str, int]) -> None:
        """Compare the hardware counters with the reference's (those defined the same way)."""
        diffs = [f"{k}: hardware {hw[k]}, reference {self.ref.counters[k]}"
                 for k in COMPARED_COUNTERS if hw[k] != self.ref.counters[k]]
        if diffs:
            raise ScoreboardMismatch(
                "MISMATCH in performance counters:\n  " + "\n  ".join(diffs)
                + f"\n  seed: {self.seed}   config: {self.config_name}"
                + (f"\n  replay: {self.replay}" if self.replay else ""))

    def check_quiescent(self) -> None:
        """Every hardware write has been matched by a prediction."""
        pending = self.store.pending_writes
        unclaimed_r = self.store.reads[self.store.read_cursor:]
        unclaimed_w = self.store.writes[self.store.write_cursor:]
        if pending or unclaimed_r or unclaimed_w:
            raise ScoreboardMismatch(
                "MISMATCH: memory transactions the reference never predicted (made after the last response):\n  "
                + "\n  ".join(str(o) for o in (unclaimed_r + unclaimed_w + pending)[:12])
                + f"\n  seed: {self.seed}   config: {self.config_name}"
                + (f"\n  replay: {self.replay}" if self.replay else ""))

    def describe(self) -> str:
        last = f"{self.last[0]} -> {self.last[1]}" if self.last else "none"
        return (f"scoreboard: {self.stats.checked} responses checked; last: {last}; "
                f"control operations not yet applied: {len(self.pending_ctl)}")
