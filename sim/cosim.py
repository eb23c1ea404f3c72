"""The environment every co-simulation test runs in (inside the cocotb simulator process).

``CosimEnv`` gathers, for one test: the configuration and seed (from the
environment the runner set, see ``sim/runner.py``), one physical memory shared
by the kernel side, the reference MMU and the DRAM model, a buddy allocator for
page-table pages and data frames, the ``Testbench`` (clock, reset, agents,
watchdog) and the ``Scoreboard``.  ``cosim_test`` turns ``async def t(env)``
into a cocotb test that ends by checking quiescence and counters and always
writes a result record (stats, failure message, seed, replay command) to
``sim_build/results/`` for ``mmu sim``'s summary.
"""

from __future__ import annotations

import functools
import json
import os
import time
import traceback
from dataclasses import dataclass

import cocotb

from model.config import MMUConfig
from model.mm.page_alloc import BuddyAllocator
from model.x86.pgtable import PageTables
from model.x86.physmem import PhysMem
from model.x86.pte import PAGE_SHIFT, Access
from model.x86.tlbflush import CtlOp
from sim import runner as R
from sim.mmu_driver import Testbench, TestbenchFailure
from sim.scoreboard import Scoreboard
from sim.transactions import Flags

# Page-table pages and data frames are handed out from this zone (64 MiB at 16 MiB);
# the rest of the 2**M bytes of physical memory reads as zeros (the store is sparse).
ZONE_START_PFN = (16 << 20) >> PAGE_SHIFT
ZONE_PAGES = (64 << 20) >> PAGE_SHIFT


@dataclass(frozen=True)
class RunIdentity:
    """Which run this is: its seed, name, replay command and where its record goes."""

    seed: int
    test_id: str
    replay: str
    result_file: str

    @classmethod
    def from_environment(cls) -> "RunIdentity":
        """The run the runner started this simulator for (``MMU_COSIM_*``, see sim/runner.py)."""
        seed_text = os.environ.get(R.ENV_SEED) or os.environ.get("SEED") or ""
        seed = int(seed_text, 0) if seed_text.strip() else R.fresh_seed()
        return cls(seed, os.environ.get(R.ENV_TEST_ID, ""),
                   os.environ.get(R.ENV_REPLAY, "") or f"SEED={seed} (re-run the same test)",
                   os.environ.get(R.ENV_RESULT, ""))


class CosimEnv:
    def __init__(self, dut, *, flags: Flags | None = None, dram: dict | None = None, resp_stall_prob: float = 0.0,
                 req_gap_prob: float = 0.0, watchdog_cycles: int | None = None, check_reads: bool = True,
                 identity: RunIdentity | None = None) -> None:
        self.dut = dut
        self.log = dut._log
        self.params = json.loads(os.environ.get(R.ENV_PARAMS, "") or "{}")
        cfg_text = os.environ.get(R.ENV_CONFIG, "")
        self.cfg = MMUConfig.from_dict(json.loads(cfg_text)) if cfg_text else MMUConfig()
        dram = {**(dram or {}), **self.params.get("dram", {})}
        if dram:
            self.cfg = R.with_dram(self.cfg, **dram)
        self.config_name = os.environ.get(R.ENV_CONFIG_NAME, "default")
        identity = identity or RunIdentity.from_environment()
        self.seed = identity.seed
        self.test_id = identity.test_id
        self.replay = identity.replay
        self.result_file = identity.result_file
        self.flags0 = flags or Flags()
        self.mem = self.physical_memory()
        self.alloc = BuddyAllocator(ZONE_START_PFN, ZONE_PAGES)
        if watchdog_cycles is None:
            t = self.cfg.dram
            worst = max(t.latency, t.tRP + t.tRCD + t.tCL) + t.jitter
            watchdog_cycles = 2000 + 200 * worst
        watchdog_cycles = int(self.params.get("watchdog_cycles", watchdog_cycles))
        resp_stall_prob = float(self.params.get("resp_stall_prob", resp_stall_prob))
        req_gap_prob = float(self.params.get("req_gap_prob", req_gap_prob))
        self.tb = Testbench(dut, self.cfg, self.mem, seed=self.seed, watchdog_cycles=watchdog_cycles,
                            resp_stall_prob=resp_stall_prob, req_gap_prob=req_gap_prob)
        self.sb = Scoreboard(self.cfg, self.mem, self.tb.store, seed=self.seed, replay=self.replay,
                             config_name=self.config_name, flags=self.flags0, check_reads=check_reads)
        self.tb.scoreboard = self.sb
        self.tb.replay = self.replay
        self.rng = self.tb.rng_stim
        self.extra: dict = {}
        inject = self.params.get("inject")
        if inject in ("flip_present", "hang"):
            self.tb.dram.inject = inject
            self.tb.dram.inject_after = int(self.params.get("inject_after", 40))
        elif inject == "drop_flush":
            from model.x86.tlbflush import CtlOp as _Op
            self.sb.drop_ctl_op = _Op.FLUSH_ALL
        self.t_start = time.monotonic()

    def physical_memory(self) -> PhysMem:
        """The memory the DRAM model, the reference MMU and the test share: all 2**M bytes (sparse).

        Called once the configuration, parameters and seed are known; a subclass that brings its own
        memory (a booted kernel's, a trace's address space) overrides it and may set ``flags0``.
        """
        return PhysMem(1 << self.cfg.maxphyaddr)

    # --- setup helpers --------------------------------------------------------------

    async def start(self) -> None:
        self.log.info("seed %d  config %s  replay: %s", self.seed, self.config_name, self.replay)
        await self.tb.start(self.flags0)

    def new_tables(self) -> PageTables:
        return PageTables(self.mem, self.alloc, self.cfg.maxphyaddr)

    def alloc_frame(self, order: int = 0) -> int:
        pfn = self.alloc.alloc_pages(order)
        if pfn is None:
            raise RuntimeError("test zone out of memory")
        return pfn << PAGE_SHIFT

    def alloc_aligned(self, size: int) -> int:
        """A physical page base aligned to ``size`` (2 MiB or 1 GiB); frames outside the zone are fine
        for data (the MMU never reads data pages), so huge pages are placed above the zone."""
        base = getattr(self, "_huge_next", 1 << 32)
        base = (base + size - 1) & ~(size - 1)
        if base + size > 1 << self.cfg.maxphyaddr:
            base = 1 << 31
        self._huge_next = base + size
        return base

    async def write_cr3(self, cr3: int, noflush: bool = False) -> int:
        return await self.tb.control(CtlOp.WRITE_CR3, cr3 | ((1 << 63) if noflush else 0))

    async def translate(self, vaddr: int, access: Access = Access.READ, user: bool = False):
        return await self.tb.translate(vaddr, access, user)

    async def set_flags(self, **changes) -> None:
        await self.tb.wait_idle()
        flags = Flags(**{**self.tb.flags.value.as_dict(), **changes})
        self.tb.set_flags(flags)

    async def reset(self) -> None:
        await self.tb.reset()
        self.sb.on_reset(self.tb.flags.value)

    def kernel_edit_ok(self) -> None:
        """Page tables may be changed by the test only while nothing is in flight."""
        if self.tb._busy() or self.tb.store.pending_writes:
            raise RuntimeError("page tables changed while the MMU had work in flight")

    # --- end of test ------------------------------------------------------------------

    async def finish(self) -> None:
        if getattr(self, "finished", False):
            return
        self.finished = True
        tb = self.tb
        await tb.wait_idle()
        await tb.cycles(4)  # counters are registers: let the last updates land
        self.sb.check_quiescent()
        self.sb.flush_pending()
        self.counters = tb.read_counters()
        self.sb.check_counters(self.counters)

    def result(self, failure: str | None) -> dict:
        st = self.sb.stats
        counters = getattr(self, "counters", None) or {}
        wall = time.monotonic() - self.t_start
        return {
            "test": self.test_id, "config": self.config_name, "seed": self.seed, "passed": failure is None,
            "failure": failure, "replay": self.replay, "simulator": cocotb.SIM_NAME, "cycles": self.tb.cycle,
            "wall_seconds": wall, "responses": {"count": self.tb.resp.count, "digest": self.tb.digest.hexdigest()},
            "scoreboard": st.to_dict(), "hw_counters": counters, "dram": self.tb.dram.stats.to_dict(),
            "extra": self.extra,
        }

    def write_result(self, failure: str | None) -> None:
        if not self.result_file:
            return
        with open(self.result_file, "w") as f:
            json.dump(self.result(failure), f, indent=1)


# name -> (body, env class, env keyword arguments) of every cosim_test, so that a batch can run any of them
COSIM_TESTS: dict[str, tuple] = {}


async def run_cosim(dut, body, env_class: type[CosimEnv] = CosimEnv, env_kwargs: dict | None = None,
                    identity: RunIdentity | None = None) -> CosimEnv:
    """One co-simulation test on ``dut``: set up, ``await body(env)``, check the end, write the record.

    Raises what failed (after writing the record).  Leaves the clock and the per-cycle loop stopped, so that
    the next run in the same simulator starts from a reset of its own.
    """
    env = env_class(dut, identity=identity, **(env_kwargs or {}))
    failure = None
    try:
        await env.start()
        await body(env)
        await env.finish()
    except (AssertionError, TestbenchFailure) as e:
        failure = str(e)
        raise
    except Exception as e:
        failure = f"{type(e).__name__}: {e}\n{traceback.format_exc()}\n  seed: {env.seed}\n  replay: {env.replay}"
        raise
    finally:
        env.tb.close()
        env.write_result(failure)
        if failure:
            env.log.error("%s", failure)
        else:
            st = env.sb.stats
            env.log.info("PASS: %d translations checked (%d hits, %d walks), %d cycles, seed %d",
                         st.checked, st.hits, st.walks, env.tb.cycle, env.seed)
    return env


def cosim_test(timeout_note: str = "", env_class: type[CosimEnv] = CosimEnv, **env_kwargs):
    """Decorator: ``async def t(env: CosimEnv)`` becomes a cocotb test with scoreboard, watchdog and result record.

    ``env_kwargs`` go to ``env_class`` (a ``CosimEnv``: flags, dram, resp_stall_prob, ...).
    """

    def deco(fn):
        COSIM_TESTS[fn.__name__] = (fn, env_class, env_kwargs)

        @functools.wraps(fn)
        async def wrapper(dut):
            await run_cosim(dut, fn, env_class, env_kwargs)

        return cocotb.test()(wrapper)

    return deco
