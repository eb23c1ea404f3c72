"""The co-simulation on Verilator, in `make test`: a representative subset of the regression.

Each test runs on Icarus and on Verilator with the same seed.  Both must pass (scoreboard, counters and
quiescence checked in each run), and as two simulators of one design they must agree exactly: the same
responses to the same requests in the same cycles (a digest of every request, response and cycle), the same
hardware counters and the same cycle count.  `mmu sim --sim verilator` runs the whole regression on Verilator.
"""

from __future__ import annotations

import pytest

from model.config import PRESETS
from sim import backend
from sim import runner as R

pytestmark = pytest.mark.cocotb

SMALL_OOM = str(R.COCOTB_DIR / "workloads" / "small-oom.wl")

# (cocotb module, test, configuration, params): random stimulus on two geometries, a flush racing each walker
# state with the page-walk cache off, and the kernel model servicing the hardware's faults.
SUBSET = [
    ("mmu_random", "random_mix", "default", {}),
    ("mmu_random", "random_stress", "fifo4", {}),
    ("mmu_directed", "flush_during_walk", "nopwc", {}),
    ("mmu_fullsys", "workload", "default", {"workload": SMALL_OOM, "pcid": True, "expect": {"oom_kill": 1}}),
]


def _run(module, test, cfg, params, request, sim, seed):
    test_id = request.node.name.replace("[", "-").rstrip("]") + f"-{sim}"
    return R.run_test(module, test, PRESETS[cfg], cfg, seed=seed, test_id=test_id, nodeid=request.node.nodeid,
                      params=params, sim=sim)


@pytest.mark.parametrize("module,test,cfg,params", SUBSET, ids=[f"{t}-{c}" for _, t, c, _ in SUBSET])
def test_same_responses(module, test, cfg, params, request):
    seed = R.seed_for(0)
    outcomes = {sim: _run(module, test, cfg, params, request, sim, seed) for sim in backend.SIMULATORS}
    for sim, out in outcomes.items():
        assert out.passed, f"{test} on {cfg}, {sim}, seed {out.seed}:\n{out.message}\nlog: {out.log}"
    ica, ver = outcomes["icarus"].result, outcomes["verilator"].result
    assert ica["simulator"].lower().startswith("icarus") and ver["simulator"].lower().startswith("verilator")
    assert ver["responses"]["count"] == ica["responses"]["count"] > 0
    assert ver["responses"]["digest"] == ica["responses"]["digest"], \
        f"Icarus and Verilator disagree on some response or its cycle (seed {outcomes['icarus'].seed})"
    assert ver["hw_counters"] == ica["hw_counters"]
    assert ver["cycles"] == ica["cycles"]


def test_checker_catches_on_verilator(request):
    """A PTE with P cleared on the way from DRAM must be reported on Verilator too."""
    out = _run("mmu_directed", "checker_selftest", "default",
               {"inject": "flip_present", "inject_after": 0, "watchdog_cycles": 300}, request, "verilator",
               R.seed_for(0))
    assert not out.passed and "MISMATCH" in out.message, out.message
