"""Volume mode: many seeds of one random test in one simulator start-up (sim/regression.py, test_volume).

Parameters (``MMU_COSIM_PARAMS``): ``test`` (a cosim_test of mmu_random), ``first_seed``, ``max_seeds`` and
``budget``: seeds first_seed, first_seed+1, ... are run one after the other, each from a reset of its own with a
fresh kernel side, scoreboard and DRAM, until ``budget`` translations have been checked (at least
``min_seeds`` seeds, at most ``max_seeds``).  Each seed writes its own record (``<test id>-s<seed>.json``)
and is exactly the single test with that seed, so a failure replays with the command in its record.  Starting
the simulator once per batch instead of once per seed saves about a second per seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
import mmu_random  # noqa: F401 - registers the random tests in COSIM_TESTS

from sim import runner as R
from sim.cosim import COSIM_TESTS, RunIdentity, run_cosim


@cocotb.test()
async def batch(dut):
    p = json.loads(os.environ.get(R.ENV_PARAMS, "") or "{}")
    body, env_class, env_kwargs = COSIM_TESTS[p["test"]]
    test_id = os.environ[R.ENV_TEST_ID]
    results = Path(os.environ[R.ENV_RESULT]).parent
    first, budget = int(p["first_seed"]), int(p["budget"])
    min_seeds, max_seeds = int(p.get("min_seeds", 1)), int(p["max_seeds"])
    checked, failures = 0, []
    seed = first
    while seed < first + max_seeds and (checked < budget or seed - first < min_seeds):
        identity = RunIdentity(seed, f"{test_id}-s{seed}", p["replay"].format(seed=seed),
                               str(results / f"{R._safe(test_id)}-s{seed}.json"))
        try:
            env = await run_cosim(dut, body, env_class, env_kwargs, identity)
            checked += env.sb.stats.checked
        except Exception as e:  # noqa: BLE001 - recorded per seed; the batch goes on and fails at the end
            failures.append(f"seed {seed}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
        seed += 1
    seeds = seed - first
    dut._log.info("batch %s: %d seeds from %d, %d translations checked, %d failed", p["test"], seeds, first,
                  checked, len(failures))
    failure = "; ".join(failures) or None
    Path(os.environ[R.ENV_RESULT]).write_text(json.dumps(
        {"test": test_id, "passed": not failures, "failure": failure, "seed": first,
         "batch": {"test": p["test"], "first_seed": first, "seeds": seeds, "checked": checked}}, indent=1))
    assert not failures, failure
