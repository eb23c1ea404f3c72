"""The DRAM behind the MMU's memory port: timing, the write overlay, and the cocotb bus agent.

One physical memory (``model.x86.physmem.PhysMem``) is shared by the kernel model,
the reference MMU and this DRAM.  Three layers:

``DRAMTimingModel``
    Pure Python: the timing of the memory port from ``model.config.DRAMTiming``,
    the one model both testbenches use (the cocotb ``DRAMAgent`` below and the
    Amaranth-simulator bench ``sim.pysim``).  ``fixed``: every read takes
    ``latency`` cycles.  ``ddr``: ``banks`` banks with one open row each; a row
    hit costs tCL, a miss on an idle bank tRCD + tCL, a conflict with another
    open row tRP + tRCD + tCL.  A seeded random 0..``jitter`` cycles is added to
    each read; responses come back in order; ``ready_drop`` deasserts
    ``mem_req.ready`` at random.

``DRAMStore``
    Pure Python: what the hardware reads and writes.  Hardware writes are *not*
    applied to ``PhysMem`` when they arrive: they go to a pending overlay (reads
    forward from it) and to an ordered log.  The reference MMU applies its own
    A/D writes to ``PhysMem`` when the scoreboard asks it to predict a request;
    the scoreboard then compares the predicted writes with the hardware's and
    retires the hardware's from the overlay (``retire``).  So the reference never
    sees an A bit the hardware set for a request it has not predicted yet.

``DRAMAgent``
    The cocotb side (imported lazily): samples ``mem_req`` and drives
    ``mem_req.ready`` (with seeded random deassertion, ``ready_drop``) and the
    ``mem_resp`` stream.  Reads are answered in order.  It is clocked by
    ``sim.mmu_driver.Testbench``'s single per-cycle loop, not by its own task.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from model.config import DRAMTiming

# ---------------------------------------------------------------------------
# timing


@dataclass
class DRAMStats:
    reads: int = 0
    writes: int = 0
    row_hits: int = 0
    row_misses: int = 0  # bank idle: activate (tRCD) + CAS (tCL)
    row_conflicts: int = 0  # another row open: precharge + activate + CAS
    read_latency_total: int = 0  # cycles from request accepted to response valid, summed
    ready_drops: int = 0  # cycles mem_req.ready was deasserted on purpose
    resp_stall_cycles: int = 0  # cycles a valid read response waited for mem_resp.ready

    @property
    def row_hit_rate(self) -> float:
        n = self.row_hits + self.row_misses + self.row_conflicts
        return self.row_hits / n if n else 0.0

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["row_hit_rate"] = self.row_hit_rate
        return d


class DRAMTimingModel:
    """Timing of the memory port, in cycles, from a ``DRAMTiming``; deterministic given ``rng``."""

    def __init__(self, timing: DRAMTiming, rng: random.Random | None = None, stats: DRAMStats | None = None):
        self.timing = timing
        self.rng = rng or random.Random(0)
        self.stats = stats or DRAMStats()
        self.open_rows: list[int | None] = [None] * timing.banks
        self.last_ready_at = -1  # when the latest read's response may be presented
        self._row_shift = timing.row_bytes.bit_length() - 1
        self._bank_mask = timing.banks - 1
        self._bank_bits = timing.banks.bit_length() - 1

    def bank_row(self, addr: int) -> tuple[int, int]:
        """Row-interleaved mapping: consecutive rows go to consecutive banks."""
        r = addr >> self._row_shift
        return r & self._bank_mask, r >> self._bank_bits

    def access(self, addr: int, write: bool) -> int:
        """Cycles this access occupies (the read latency); updates the open rows and statistics."""
        t = self.timing
        if t.kind == "fixed":
            latency = t.latency
        else:
            bank, row = self.bank_row(addr)
            open_row = self.open_rows[bank]
            if open_row == row:
                latency = t.tCL
                self.stats.row_hits += 1
            elif open_row is None:
                latency = t.tRCD + t.tCL
                self.stats.row_misses += 1
            else:
                latency = t.tRP + t.tRCD + t.tCL
                self.stats.row_conflicts += 1
            self.open_rows[bank] = row
        if t.jitter and not write:
            latency += self.rng.randint(0, t.jitter)
        return latency

    def schedule_read(self, addr: int, cycle: int) -> int:
        """The first cycle the response to a read accepted at ``cycle`` may be presented: after its
        latency (at least one cycle) and after the read before it (responses are in order)."""
        ready_at = max(cycle + max(1, self.access(addr, False)), self.last_ready_at + 1)
        self.last_ready_at = ready_at
        self.stats.reads += 1
        self.stats.read_latency_total += ready_at - cycle
        return ready_at

    def write(self, addr: int) -> None:
        """A write accepted: it opens its row (it has no response)."""
        self.access(addr, True)
        self.stats.writes += 1

    def drops_ready(self) -> bool:
        """Whether ``mem_req.ready`` is deasserted in the next cycle (``ready_drop``, seeded)."""
        if self.timing.ready_drop and self.rng.random() < self.timing.ready_drop:
            self.stats.ready_drops += 1
            return True
        return False

    def reset(self) -> None:
        """Close every row and forget the in-flight reads (the hardware that asked for them was reset)."""
        self.open_rows = [None] * self.timing.banks
        self.last_ready_at = -1


# ---------------------------------------------------------------------------
# storage, overlay and logs


@dataclass(slots=True)
class MemOp:
    """One memory-port transaction as the hardware made it."""

    seq: int  # position among all memory transactions (reads and writes) since the start
    cycle: int  # clock cycle its request was accepted
    write: bool
    addr: int
    value: int  # write data, or the data the read returned
    done: int = -1  # a read: the cycle its response was taken

    def __str__(self) -> str:
        kind = "W" if self.write else "R"
        return f"{kind} {self.addr:#012x} = {self.value:#018x} @cycle {self.cycle}"


class DRAMError(AssertionError):
    """The hardware broke the memory-port protocol (misaligned address, ...)."""


class DRAMStore:
    """Physical memory as the hardware sees it: ``PhysMem`` plus the pending overlay of hardware writes."""

    def __init__(self, mem) -> None:
        self.mem = mem
        self._overlay: dict[int, list[MemOp]] = {}  # addr -> pending hardware writes, oldest first
        self.log: list[MemOp] = []  # every transaction, in order
        self.reads: list[MemOp] = []
        self.writes: list[MemOp] = []
        self.read_cursor = 0  # reads before this index have been claimed by the scoreboard
        self.write_cursor = 0
        self.committed_unchecked: list[MemOp] = []  # hardware writes committed without a prediction (reset)

    # hardware side
    def hw_read(self, addr: int, cycle: int) -> MemOp:
        self._check(addr, "read")
        pending = self._overlay.get(addr)
        value = pending[-1].value if pending else self.mem.read64(addr)
        op = MemOp(len(self.log), cycle, False, addr, value)
        self.log.append(op)
        self.reads.append(op)
        return op

    def hw_write(self, addr: int, value: int, cycle: int) -> MemOp:
        self._check(addr, "write")
        op = MemOp(len(self.log), cycle, True, addr, value)
        self.log.append(op)
        self.writes.append(op)
        self._overlay.setdefault(addr, []).append(op)
        return op

    def _check(self, addr: int, what: str) -> None:
        if addr & 7:
            raise DRAMError(f"hardware {what} at {addr:#x}: memory-port addresses must be 8-byte aligned")
        if not 0 <= addr < self.mem.size:
            raise DRAMError(f"hardware {what} at {addr:#x}: outside physical memory [0, {self.mem.size:#x})")

    # scoreboard side
    def claim(self, upto_cycle: int) -> tuple[list[MemOp], list[MemOp]]:
        """Reads and writes accepted at or before ``upto_cycle`` not claimed yet, in order."""
        r0, w0 = self.read_cursor, self.write_cursor
        r1, w1 = r0, w0
        while r1 < len(self.reads) and self.reads[r1].cycle <= upto_cycle:
            r1 += 1
        while w1 < len(self.writes) and self.writes[w1].cycle <= upto_cycle:
            w1 += 1
        self.read_cursor, self.write_cursor = r1, w1
        return self.reads[r0:r1], self.writes[w0:w1]

    def retire(self, ops: list[MemOp]) -> None:
        """Drop checked hardware writes from the overlay (the reference has made them in ``PhysMem``)."""
        for op in ops:
            pending = self._overlay.get(op.addr)
            if pending and op in pending:
                pending.remove(op)
                if not pending:
                    del self._overlay[op.addr]

    def commit_pending(self) -> list[MemOp]:
        """Apply every pending hardware write to ``PhysMem`` in order (after a reset drops the walk that made them).

        Those writes really reached DRAM; the reference never predicted them.
        Returns them, oldest first.
        """
        ops = sorted((op for pending in self._overlay.values() for op in pending), key=lambda o: o.seq)
        for op in ops:
            self.mem.write64(op.addr, op.value)
        self._overlay.clear()
        self.committed_unchecked.extend(ops)
        self.read_cursor, self.write_cursor = len(self.reads), len(self.writes)
        return ops

    @property
    def pending_writes(self) -> list[MemOp]:
        return sorted((op for p in self._overlay.values() for op in p), key=lambda o: o.seq)

    def read_through(self, addr: int) -> int:
        """What the hardware would read at ``addr`` now (overlay first)."""
        pending = self._overlay.get(addr)
        return pending[-1].value if pending else self.mem.read64(addr)


# ---------------------------------------------------------------------------
# cocotb agent


@dataclass
class _Pending:
    op: MemOp
    ready_at: int  # first cycle the response may be presented


class DRAMAgent:
    """The memory-port bus agent: slave on ``mem_req``, master on ``mem_resp``.

    ``sample(cycle)`` is called right after each rising edge with the values
    the DUT and the testbench drove before it (a handshake happened on that
    edge when valid and ready were both 1); ``drive(cycle)`` then sets the
    testbench's outputs for the next edge.

    A read accepted on edge ``c`` is presented on ``mem_resp`` from edge
    ``DRAMTimingModel.schedule_read`` gives on.
    """

    def __init__(self, dut, ports, store: DRAMStore, timing: DRAMTiming, rng: random.Random,
                 *, resp_ready_always: bool = True) -> None:
        self.dut = dut
        self.ports = ports
        self.store = store
        self.stats = DRAMStats()
        self.model = DRAMTimingModel(timing, rng, self.stats)
        self.queue: deque[_Pending] = deque()
        self.last_req: MemOp | None = None
        self._req_ready = 0
        self._resp_valid = 0
        self._resp_payload = -1
        self._mem_addr = ports.mem_req.fields["addr"]
        self._mem_wdata = ports.mem_req.fields["wdata"]
        self._mem_we = ports.mem_req.fields["we"]
        self._rdata = ports.mem_resp.fields["rdata"]
        self.on_write = None  # optional callback(op)
        self.on_read = None
        # fault injection, for the testbench's self-tests (a checker that never fails proves nothing):
        # "flip_present" clears P in the data of the first read of a present entry after `inject_after` reads;
        # "hang" never answers the reads after `inject_after` reads.
        self.inject: str | None = None
        self.inject_after = 0
        self.injected = False
        from sim.mmu_driver import bit_reader, int_reader

        self._req_valid_now = bit_reader(dut.mem_req__valid)
        self._req_payload_now = int_reader(dut.mem_req__payload)
        self._resp_ready_now = bit_reader(dut.mem_resp__ready)
        self._h_req_ready = dut.mem_req__ready
        self._h_resp_valid = dut.mem_resp__valid
        self._h_resp_payload = dut.mem_resp__payload

    def reset(self) -> None:
        """Drop every in-flight read (the hardware that asked for it was reset); close all rows."""
        self.queue.clear()
        self.model.reset()
        self._set_outputs(0, 0, None, force=True)

    def idle(self) -> bool:
        return not self.queue

    def sample(self, cycle: int) -> None:
        # read response handshake
        if self._resp_valid:
            if self._resp_ready_now():
                self.queue.popleft().op.done = cycle
            else:
                self.stats.resp_stall_cycles += 1
        # request handshake
        if self._req_ready and self._req_valid_now():
            word = self._req_payload_now()
            o, w = self._mem_addr
            addr = (word >> o) & ((1 << w) - 1)
            o, w = self._mem_we
            if (word >> o) & 1:
                o, w = self._mem_wdata
                op = self.store.hw_write(addr, (word >> o) & ((1 << w) - 1), cycle)
                self.model.write(addr)
                if self.on_write:
                    self.on_write(op)
            else:
                op = self.store.hw_read(addr, cycle)
                if self.inject == "flip_present" and not self.injected and op.value & 1 \
                        and len(self.store.reads) > self.inject_after:
                    op.value ^= 1
                    self.injected = True
                self.queue.append(_Pending(op, self.model.schedule_read(addr, cycle)))
                if self.on_read:
                    self.on_read(op)
            self.last_req = op

    def drive(self, cycle: int) -> None:
        """Outputs for the edge ``cycle + 1``."""
        nxt = cycle + 1
        ready = 0 if self.model.drops_ready() else 1
        head = self.queue[0] if self.queue else None
        if self.inject == "hang" and head is not None and head.op.seq >= self.inject_after:
            self.injected = True
            head = None
        if head is not None and head.ready_at <= nxt:
            self._set_outputs(ready, 1, head.op.value)
        else:
            self._set_outputs(ready, 0, None)

    def _set_outputs(self, ready: int, valid: int, rdata: int | None, force: bool = False) -> None:
        if force or ready != self._req_ready:
            self._h_req_ready.value = ready
            self._req_ready = ready
        if force or valid != self._resp_valid:
            self._h_resp_valid.value = valid
            self._resp_valid = valid
        if rdata is not None:
            payload = rdata << self._rdata[0]
            if payload != self._resp_payload:
                self._h_resp_payload.value = payload
                self._resp_payload = payload
        elif force:
            self._h_resp_payload.value = 0
            self._resp_payload = 0

    def describe(self) -> str:
        q = ", ".join(f"[{p.op} ready@{p.ready_at}]" for p in list(self.queue)[:4])
        return (f"DRAM: {self.stats.reads} reads, {self.stats.writes} writes; last request: "
                f"{self.last_req or 'none'}; in-flight reads: {q or 'none'}; mem_req.ready={self._req_ready}")
