"""A program's memory trace through the hardware MMU on Icarus (``mmu trace FILE --hw``).

The address space is the reference replay's (``replay/trace_replay.py``:
``AddressSpace.for_trace``, every page a 4 KiB user page with full rights, A
and D clear), built in the memory the DRAM model serves.  Every page access of
the trace is sent (no folding: cycles need the hits too), with a few requests
queued ahead so that the MMU sees a request in every cycle it can take one;
``cycles`` runs from the first request's acceptance to the last response and so
measures throughput.  The scoreboard checks every response, DRAM read and A/D
write against the reference MMU, and at the end the counters are compared
with the reference replay (folded) of the same accesses.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from model.config import MMUConfig, hardware_name
from model.x86.pte import Access
from replay.lackey import Trace, read_lackey
from replay.trace_replay import AddressSpace, progress_bar, replay
from sim import runner as R
from sim.cosim import CosimEnv

RESULTS_DIR = R.SIM_BUILD / "trace_results"  # `mmu trace --hw` records, apart from the regression's

# The keys `mmu trace --hw --json` prints: the reference replay's plus the split of DTLB misses and the seed.
HW_KEYS = ("accesses", "itlb_misses", "dtlb_misses", "dtlb_read_misses", "dtlb_write_misses", "walks", "dram_reads",
           "faults", "cycles", "seed")
# The counters that must equal the reference replay's.
COMPARED = ("accesses", "itlb_misses", "dtlb_misses", "walks", "dram_reads", "faults")
QUEUE_DEPTH = 4  # requests queued ahead of the one being presented
PROGRESS_EVERY = 500  # accesses between writes of the progress file (the simulator checks a few thousand a second)
_ACCESS = (Access.READ, Access.WRITE, Access.FETCH)  # by port encoding


def trace_prefix(trace: Trace, limit: int | None) -> Trace:
    """The first ``limit`` page accesses (all of them for None); ``records`` stays the file's."""
    if limit is None or limit >= len(trace):
        return trace
    return Trace(trace.name, trace.vaddr[:limit].copy(), trace.access[:limit].copy(), trace.records)


def reference_counters(trace: Trace, cfg) -> dict:
    r = replay(trace, cfg)
    return {k: getattr(r, k) for k in COMPARED}


class TraceEnv(CosimEnv):
    """A co-simulation whose physical memory is a trace's address space (parameters: trace, limit)."""

    def physical_memory(self):
        self.trace = trace_prefix(read_lackey(self.params["trace"]), self.params.get("limit"))
        self.space = AddressSpace.for_trace(self.trace, self.cfg)
        return self.space.mem


async def replay_on_hardware(env: TraceEnv) -> None:
    tb = env.tb
    trace = env.trace
    await env.write_cr3(env.space.tables.pml4)
    await tb.wait_idle()
    first = last = None
    progress = Path(env.params["progress"]) if env.params.get("progress") else None
    for k, (vaddr, access) in enumerate(zip(trace.vaddr.tolist(), trace.access.tolist())):
        last = tb.submit(vaddr, _ACCESS[access], True)
        if first is None:
            first = last
        while len(tb.req.queue) > QUEUE_DEPTH:
            await tb.wait_accepted(tb.req.queue[0])
        if progress is not None and k % PROGRESS_EVERY == 0:
            progress.write_text(str(k))
    await tb.wait_response(last)
    cycles = last.response.cycle - first.accept_cycle
    await env.finish()  # every response checked; hardware counters equal to the scoreboard's reference
    misses = env.sb.stats.tlb_misses
    hw = env.counters
    result = {
        "accesses": len(trace), "itlb_misses": misses["fetch"], "dtlb_misses": misses["read"] + misses["write"],
        "dtlb_read_misses": misses["read"], "dtlb_write_misses": misses["write"], "walks": hw["walks"],
        "dram_reads": hw["mem_reads"], "faults": hw["faults"], "cycles": cycles, "seed": env.seed,
    }
    ref = reference_counters(trace, env.cfg)
    env.extra["trace"] = {"name": trace.name, "records": trace.records, "pages": env.space.pages,
                          "result": result, "reference": ref, "pwc_hits": hw["pwc_hits"],
                          "dram_writes": hw["mem_writes"], "walk_cycles": hw["walk_cycles"]}
    diffs = [f"{k}: hardware {result[k]}, reference replay {ref[k]}" for k in COMPARED if result[k] != ref[k]]
    if diffs:
        raise AssertionError("trace counters differ from the reference replay of the same accesses:\n  "
                             + "\n  ".join(diffs) + f"\n  seed: {env.seed}\n  replay: {env.replay}")


def run_on_hardware(path: str, limit: int | None, cfg: MMUConfig, seed: int, replay_cmd: str, *,
                    progress: int | None = None) -> R.TestOutcome:
    """Build the design of ``cfg`` if needed and run the trace (or its first ``limit`` accesses) on Icarus.

    ``progress``: the number of accesses sent, to show a bar over them like the model path's
    (``progress_bar``: only on a terminal).  The simulator runs in a thread of this process and writes how
    far it got to a file, which is polled.
    """
    name = hardware_name(cfg)
    R.build(cfg, name, quiet=False)
    test_id = "trace_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).name) + (f"_{limit}" if limit else "")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    sent = RESULTS_DIR / f"{test_id}.progress"
    sent.unlink(missing_ok=True)
    params = {"trace": str(Path(path).resolve()), "limit": limit, "progress": str(sent) if progress else None}
    with ThreadPoolExecutor(1) as pool, progress_bar(progress or 0, f"hw {Path(path).name}", "access",
                                                     show=bool(progress), unit_scale=True) as bar:
        run = pool.submit(R.run_test, "mmu_fullsys", "trace", cfg, name, seed=seed, test_id=test_id, params=params,
                          results_dir=RESULTS_DIR, replay=replay_cmd)
        while not wait([run], timeout=0.5).done:
            try:
                bar.update(int(sent.read_text() or 0) - bar.n)
            except (OSError, ValueError):  # not written yet, or caught mid-write
                pass
        sent.unlink(missing_ok=True)
        return run.result()
