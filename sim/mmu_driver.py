"""cocotb bus agents for the MMU top, one class per bus role, and the ``Testbench`` that clocks them.

Bus roles (cocotbext-axi style: each owns its signals and a queue):

- ``RequestDriver``: master on ``req``; ``await send(...)`` returns when the
  request is accepted (its ``accept_cycle`` is recorded), ``translate`` waits
  for the response too.
- ``ResponseMonitor``: slave on ``resp``; drives ``resp.ready`` (optionally with
  seeded random backpressure) and reports each response.
- ``CtlDriver``: master on ``ctl``; ``await send(op, value)`` returns when the
  operation is accepted, which on this port *is* the acknowledge (the flush has
  taken effect); the accept cycle is recorded.
- ``FlagsDriver``: the level-sensitive ``flags`` vector (WP, NXE, SMEP, SMAP, PCIDE).
- ``CountersReader``: unpacks the flat ``counters`` vector.
- ``sim.dram.DRAMAgent``: slave on ``mem_req``, master on ``mem_resp``.

Timing discipline.  One task, ``Testbench._cycle_loop``, awaits every rising
edge of ``clk`` once and then calls, in a fixed order, ``sample(cycle)`` on every
agent (what the signals held just before the edge, i.e. which handshakes
happened on it) and then ``drive(cycle)`` (the testbench's outputs for the next
edge).  A single loop is faster than one task per agent and makes the order of
events within a cycle deterministic: memory transactions of a cycle are logged
before a response of the same cycle is checked.  Cycle numbers count rising
edges since the clock started.

The watchdog lives in the same loop: a request outstanding (or a request/ctl
valid not accepted) for ``watchdog_cycles`` cycles fails the test with the
state it was stuck in.
"""

from __future__ import annotations

import hashlib
import random
from asyncio import CancelledError
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, First, RisingEdge, Timer

from model.config import MMUConfig
from model.x86.pte import Access
from model.x86.tlbflush import CtlOp
from sim.dram import DRAMAgent, DRAMStore
from sim.ports import MMUPorts
from sim.transactions import CtlTxn, Flags, Request, Response

CLOCK_PERIOD_NS = 10


# ---------------------------------------------------------------------------
# fast signal reads
#
# Reading ``handle.value`` builds a Logic/LogicArray object; on the per-cycle hot path
# (valid and ready bits, every cycle) that costs more than the simulation itself.  These
# readers take the binary string straight from the GPI object when cocotb exposes it
# (cocotb 2.x: ``handle._handle.get_signal_val_binstr``) and fall back to ``.value``.
# An X or Z on a handshake bit or a payload is an error, never silently read as 0.


class SignalXError(AssertionError):
    pass


def bit_reader(handle):
    raw = getattr(getattr(handle, "_handle", None), "get_signal_val_binstr", None)
    name = getattr(handle, "_name", "signal")
    if raw is None:  # pragma: no cover - other cocotb versions
        def read_value() -> bool:
            v = handle.value
            if not v.is_resolvable:
                raise SignalXError(f"{name} is {v}: a handshake signal must be 0 or 1")
            return bool(v)
        return read_value

    def read() -> bool:
        v = raw()
        if v == "1":
            return True
        if v == "0":
            return False
        raise SignalXError(f"{name} is {v!r}: a handshake signal must be 0 or 1")
    return read


def int_reader(handle):
    raw = getattr(getattr(handle, "_handle", None), "get_signal_val_binstr", None)
    name = getattr(handle, "_name", "signal")
    if raw is None:  # pragma: no cover
        return lambda: int(handle.value)

    def read() -> int:
        v = raw()
        try:
            return int(v, 2)
        except ValueError:
            raise SignalXError(f"{name} = {v!r}: has X or Z bits while it must be valid") from None
    return read


class TestbenchFailure(AssertionError):
    """The scoreboard or the watchdog stopped the test."""


# ---------------------------------------------------------------------------
# agents


class StreamSource:
    """Master on one valid/ready stream: queued items are presented in order, valid stays up until the
    item is accepted, and the acceptance cycle is stamped on the item.  Subclasses say how an item is
    packed and what acceptance means for it."""

    def __init__(self, dut, port: str, rng: random.Random | None = None, *, gap_prob: float = 0.0) -> None:
        self.rng = rng
        self.gap_prob = gap_prob  # chance of an idle cycle before presenting the next item
        self.queue: deque = deque()
        self.on_accept = []  # callbacks(item)
        self._valid = 0  # an item is presented and not yet accepted
        self._driven = 0  # the value last written to valid
        self._payload = None
        self._waiting_since = -1
        self._h_valid, self._h_payload = getattr(dut, f"{port}__valid"), getattr(dut, f"{port}__payload")
        self._ready = bit_reader(getattr(dut, f"{port}__ready"))

    def _pack(self, item) -> int:
        raise NotImplementedError

    def _take(self, item) -> None:
        """Bookkeeping at acceptance, before the accept callbacks run."""

    def _acknowledge(self, item) -> None:
        """Wake whoever waits for the acceptance, after the accept callbacks ran."""

    def reset(self) -> None:
        self.queue.clear()
        self._valid = self._driven = 0
        self._payload = None
        self._h_valid.value = 0

    def busy(self) -> bool:
        return bool(self.queue)

    def sample(self, cycle: int):
        if self._valid and self._ready():
            item = self.queue.popleft()
            item.accept_cycle = cycle
            self._valid = 0
            self._waiting_since = -1
            self._take(item)
            for cb in self.on_accept:
                cb(item)
            self._acknowledge(item)
            return item
        return None

    def drive(self, cycle: int) -> None:
        if self._valid:
            return  # hold until accepted
        if self.queue and not (self.gap_prob and self.rng.random() < self.gap_prob):
            payload = self._pack(self.queue[0])
            if payload != self._payload:
                self._h_payload.value = payload
                self._payload = payload
            if not self._driven:
                self._h_valid.value = 1
                self._driven = 1
            self._valid = 1
            self._waiting_since = cycle + 1
        elif self._driven:
            self._h_valid.value = 0
            self._driven = 0

    def stalled_for(self, cycle: int) -> int:
        return cycle - self._waiting_since if self._valid and self._waiting_since >= 0 else 0


class RequestDriver(StreamSource):
    """Master on ``req``: translate requests, numbered in acceptance order."""

    def __init__(self, dut, ports: MMUPorts, rng: random.Random, *, gap_prob: float = 0.0) -> None:
        super().__init__(dut, "req", rng, gap_prob=gap_prob)
        self.ports = ports
        self.accepted = 0

    def submit(self, req: Request) -> Request:
        req._done = Event()
        req._accepted = Event()
        self.queue.append(req)
        return req

    def _pack(self, req: Request) -> int:
        return self.ports.req.pack(vaddr=req.vaddr, access=int(req.access), user=int(req.user), id=req.id)

    def _take(self, req: Request) -> None:
        req.seq = self.accepted
        self.accepted += 1

    def _acknowledge(self, req: Request) -> None:
        req._accepted.set()


class ResponseMonitor:
    """Slave on ``resp``: drives ``resp.ready`` (1, or seeded random backpressure) and reports responses."""

    def __init__(self, dut, ports: MMUPorts, rng: random.Random, *, stall_prob: float = 0.0) -> None:
        self.ports = ports
        self.rng = rng
        self.stall_prob = stall_prob
        self.on_response = []  # callbacks(resp)
        self.count = 0
        self._ready = None
        self._h_ready = dut.resp__ready
        self._valid = bit_reader(dut.resp__valid)
        self._payload = int_reader(dut.resp__payload)

    def reset(self) -> None:
        self._set_ready(1)

    def sample(self, cycle: int) -> Response | None:
        if self._ready and self._valid():
            resp = Response.from_fields(self.ports.resp.unpack(self._payload()), cycle)
            self.count += 1
            for cb in self.on_response:
                cb(resp)
            return resp
        return None

    def drive(self, cycle: int) -> None:
        ready = 1
        if self.stall_prob and self.rng.random() < self.stall_prob:
            ready = 0
        self._set_ready(ready)

    def _set_ready(self, ready: int) -> None:
        if ready != self._ready:
            self._h_ready.value = ready
            self._ready = ready


class CtlDriver(StreamSource):
    """Master on ``ctl``: CR3 writes and flushes.  Acceptance is the acknowledge."""

    def __init__(self, dut, ports: MMUPorts) -> None:
        super().__init__(dut, "ctl")
        self.ports = ports
        self.log: list[CtlTxn] = []

    def submit(self, op: CtlOp, value: int) -> CtlTxn:
        txn = CtlTxn(CtlOp(op), value & ((1 << 64) - 1))
        txn._done = Event()
        self.queue.append(txn)
        return txn

    def _pack(self, txn: CtlTxn) -> int:
        return self.ports.ctl.pack(op=int(txn.op), value=txn.value)

    def _take(self, txn: CtlTxn) -> None:
        self.log.append(txn)

    def _acknowledge(self, txn: CtlTxn) -> None:
        txn._done.set()


class FlagsDriver:
    def __init__(self, dut, ports: MMUPorts) -> None:
        self.ports = ports
        self._h = dut.flags
        self.value = Flags()

    def set(self, flags: Flags) -> None:
        self.value = flags
        self._h.value = self.ports.flags.pack(**{k: int(v) for k, v in flags.as_dict().items()})


class CountersReader:
    def __init__(self, dut, ports: MMUPorts) -> None:
        self.ports = ports
        self._read = int_reader(dut.counters)

    def read(self) -> dict[str, int]:
        return self.ports.counters.unpack(self._read())


# ---------------------------------------------------------------------------
# the testbench


class Testbench:
    """Everything around one MMU DUT: clock, reset, agents, DRAM, scoreboard, watchdog.

    ``scoreboard`` is any object with ``on_request(req)``, ``on_ctl(txn)``,
    ``on_response(resp, req)`` and ``describe()``; see ``sim.scoreboard``.
    """

    def __init__(self, dut, cfg: MMUConfig, mem, *, seed: int, watchdog_cycles: int = 5000,
                 resp_stall_prob: float = 0.0, req_gap_prob: float = 0.0, log=None) -> None:
        self.dut = dut
        self.cfg = cfg
        self.seed = seed
        self.log = log or dut._log
        self.ports = MMUPorts.for_config(cfg)
        # one generator per random stream, so changing one stream's use does not reshuffle the others
        master = random.Random(seed)
        self.rng_stim = random.Random(master.getrandbits(64))
        rng_dram = random.Random(master.getrandbits(64))
        rng_bus = random.Random(master.getrandbits(64))
        self.mem = mem
        self.store = DRAMStore(mem)
        self.dram = DRAMAgent(dut, self.ports, self.store, cfg.dram, rng_dram)
        self.req = RequestDriver(dut, self.ports, rng_bus, gap_prob=req_gap_prob)
        self.resp = ResponseMonitor(dut, self.ports, rng_bus, stall_prob=resp_stall_prob)
        self.ctl = CtlDriver(dut, self.ports)
        self.flags = FlagsDriver(dut, self.ports)
        self.counters = CountersReader(dut, self.ports)
        self.scoreboard = None
        self.replay = ""  # the command that replays this test, for failure messages
        self.outstanding: deque[Request] = deque()
        # every (request, response, cycle) in order: two simulators of the same design must agree on it
        self.digest = hashlib.blake2b(digest_size=16)
        self.cycle = -1
        self.watchdog_cycles = watchdog_cycles
        self.failure: BaseException | None = None
        self._fail_event = Event()
        self._waiters: set[Event] = set()
        self._in_reset = True
        self._loop_task = None
        self._clock = None
        self._next_id = 0
        self._last_progress = 0
        self._idle_event = Event()
        self.req.on_accept.append(self._on_accept)
        self.resp.on_response.append(self._on_response)
        self.ctl.on_accept.append(self._on_ctl)

    # --- start / reset ------------------------------------------------------

    async def start(self, flags: Flags | None = None) -> None:
        dut = self.dut
        dut.rst.value = 1
        dut.req__valid.value = 0
        dut.ctl__valid.value = 0
        dut.mem_req__ready.value = 0
        dut.mem_resp__valid.value = 0
        dut.mem_resp__payload.value = 0
        dut.resp__ready.value = 0
        dut.req__payload.value = 0
        dut.ctl__payload.value = 0
        self.flags.set(flags or Flags())
        self._clock = Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns", impl="gpi")
        self._clock.start(start_high=False)
        self._loop_task = cocotb.start_soon(self._cycle_loop())
        await self.reset()

    async def reset(self, cycles: int = 3) -> None:
        """Hold ``rst`` for ``cycles`` edges; every agent drops what it had in flight."""
        self._in_reset = True
        self.dut.rst.value = 1
        self.req.reset()
        self.ctl.reset()
        self.dram.reset()
        self.resp.reset()
        for r in self.outstanding:
            r._done.set()
        self.outstanding.clear()
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        self._in_reset = False
        self._last_progress = self.cycle
        self._check_failure()

    # --- the per-cycle loop ---------------------------------------------------

    async def _cycle_loop(self) -> None:
        clk_edge = RisingEdge(self.dut.clk)
        try:
            while True:
                await clk_edge
                self.cycle += 1
                cycle = self.cycle
                if self._in_reset:
                    continue
                # sample: what happened on this edge (fixed order: memory, control, requests, responses)
                self.dram.sample(cycle)
                self.ctl.sample(cycle)
                self.req.sample(cycle)
                self.resp.sample(cycle)
                # drive: outputs for the next edge
                self.dram.drive(cycle)
                self.ctl.drive(cycle)
                self.req.drive(cycle)
                self.resp.drive(cycle)
                if cycle - self._last_progress > self.watchdog_cycles and self._busy():
                    raise TestbenchFailure(self._watchdog_message())
                if not self._busy():
                    self._idle_event.set()
        except CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - forwarded to the test coroutine
            self.failure = e
            self._fail_event.set()
            for ev in list(self._waiters):
                ev.set()

    def _busy(self) -> bool:
        return bool(self.outstanding or self.req.queue or self.ctl.queue)

    def _on_accept(self, req: Request) -> None:
        self.outstanding.append(req)
        self._last_progress = self.cycle
        if self.scoreboard:
            self.scoreboard.on_request(req)

    def _on_ctl(self, txn: CtlTxn) -> None:
        self._last_progress = self.cycle
        if self.scoreboard:
            self.scoreboard.on_ctl(txn)

    def _on_response(self, resp: Response) -> None:
        self._last_progress = self.cycle
        if not self.outstanding:
            raise TestbenchFailure(f"response {resp} at cycle {resp.cycle} with no request outstanding")
        req = self.outstanding.popleft()
        req.response = resp
        self.digest.update(b"%x %d %d %d %x %d %x %d %d %d;" % (
            req.vaddr, req.access, req.user, req.accept_cycle, resp.paddr, resp.fault, resp.error_code, resp.size,
            resp.tlb_hit, resp.cycle))
        if self.scoreboard:
            self.scoreboard.on_response(resp, req)
        elif resp.id != req.id:
            raise TestbenchFailure(f"response id {resp.id} for request {req}")
        req._done.set()

    def _watchdog_message(self) -> str:
        lines = [f"watchdog: no progress for {self.watchdog_cycles} cycles (cycle {self.cycle}, seed {self.seed})"]
        if self.outstanding:
            lines.append("outstanding requests: " + "; ".join(str(r) for r in list(self.outstanding)[:4]))
        if self.req._valid:
            lines.append(f"req.valid held for {self.req.stalled_for(self.cycle)} cycles without req.ready: "
                         f"{self.req.queue[0]}")
        if self.ctl._valid:
            lines.append(f"ctl.valid held for {self.ctl.stalled_for(self.cycle)} cycles without ctl.ready: "
                         f"{self.ctl.queue[0]}")
        lines.append(self.dram.describe())
        if self.scoreboard is not None:
            lines.append(self.scoreboard.describe())
        if self.replay:
            lines.append(f"replay: {self.replay}")
        return "\n  ".join(lines)

    def _check_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def _until(self, event: Event) -> None:
        """Wait for ``event``; a failure in the per-cycle loop wakes every waiter (and is raised)."""
        if not event.is_set() and self.failure is None:
            self._waiters.add(event)
            try:
                await event.wait()
            finally:
                self._waiters.discard(event)
        self._check_failure()

    # --- stimulus API -------------------------------------------------------------

    def new_id(self) -> int:
        i = self._next_id
        self._next_id = (self._next_id + 1) % (1 << self.cfg.id_bits)
        return i

    def submit(self, vaddr: int, access: Access = Access.READ, user: bool = False, id: int | None = None) -> Request:
        """Queue a translate request; returns at once (see ``wait_accepted`` / ``wait_response``)."""
        self._check_failure()
        req = Request(vaddr & ((1 << 64) - 1), Access(access), bool(user), self.new_id() if id is None else id)
        self._idle_event.clear()
        return self.req.submit(req)

    async def wait_response(self, req: Request) -> Response:
        await self._until(req._done)
        return req.response

    async def wait_accepted(self, req: Request) -> int:
        await self._until(req._accepted)
        return req.accept_cycle

    async def wait_until(self, predicate, limit: int | None = None) -> None:
        """Until ``predicate()`` is true after some edge (checked once per cycle)."""
        start = self.cycle
        while not predicate():
            await RisingEdge(self.dut.clk)
            self._check_failure()
            if limit is not None and self.cycle - start > limit:
                raise TestbenchFailure(f"wait_until: condition not met within {limit} cycles")

    async def translate(self, vaddr: int, access: Access = Access.READ, user: bool = False) -> Response:
        return await self.wait_response(self.submit(vaddr, access, user))

    def submit_ctl(self, op: CtlOp, value: int = 0) -> CtlTxn:
        self._check_failure()
        self._idle_event.clear()
        return self.ctl.submit(op, value)

    async def control(self, op: CtlOp, value: int = 0) -> int:
        """Send a CR3 write or flush; returns the cycle it was accepted (= acknowledged)."""
        txn = self.submit_ctl(op, value)
        await self._until(txn._done)
        return txn.accept_cycle

    async def wait_idle(self) -> None:
        """Until nothing is queued or outstanding (every response has been checked)."""
        while self._busy():
            self._idle_event.clear()
            await self._until(self._idle_event)
        self._check_failure()

    async def cycles(self, n: int) -> None:
        """Let about ``n`` clock cycles pass (one timer, not one wake-up per cycle)."""
        if n > 0:
            await First(Timer(n * CLOCK_PERIOD_NS, "ns"), self._fail_event.wait())
        self._check_failure()

    async def wait_cycle(self, cycle: int) -> None:
        while self.cycle < cycle:
            await RisingEdge(self.dut.clk)
        self._check_failure()

    def set_flags(self, flags: Flags) -> None:
        """Change the level flags; only while idle (the scoreboard applies them in order)."""
        if self._busy():
            raise RuntimeError("set_flags while requests are in flight: call wait_idle() first")
        self.flags.set(flags)
        if self.scoreboard:
            self.scoreboard.on_flags(flags)

    def stop(self) -> None:
        """Stop the per-cycle loop (the clock keeps running)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            self._loop_task = None

    def close(self) -> None:
        """Stop the per-cycle loop and the clock (the end of a run; the next one starts its own)."""
        self.stop()
        if self._clock is not None:
            self._clock.stop()
            self._clock = None

    def read_counters(self) -> dict[str, int]:
        return self.counters.read()
