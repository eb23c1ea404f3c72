"""Seed sharding on pytest-xdist's execnet gateways, as on several hosts (docs/verification.md).

Two popen gateways stand in for two machines: each has its own working directory and its own record folder
(on another host the simulator writes its records there, out of the controller's reach).  The records must
still reach the controller's folder, through pytest's reports (sim/records.py), and `mmu sim`'s summary must
count every seed of both batches.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sim import records
from sim import runner as R

pytestmark = pytest.mark.cocotb


def test_volume_on_two_gateways(tmp_path):
    seed = R.seed_for(0)
    hosts = [tmp_path / "host-a", tmp_path / "host-b"]
    specs = []
    for h in hosts:
        (h / "records").mkdir(parents=True)
        # builds are shared with this checkout's (a real host builds its own the same way)
        specs += ["--tx", f"popen//chdir={h}//env:{R.ENV_RESULTS_DIR}={h / 'records'}"
                          f"//env:MMU_SIM_BUILD={R.SIM_BUILD}"]
    controller = tmp_path / "controller"
    env = {**os.environ, "MMU_SIM_BUILD": str(controller)}
    for k in ("SEED", "SEEDS", "SIM", "TRANSLATIONS", R.ENV_RESULTS_DIR):
        env.pop(k, None)
    # a budget just over 7 batches' worth gives two batches per random test; -k keeps those of one test
    budget = 7 * 25000 + 1
    cmd = [sys.executable, "-m", "cli.main", "sim", "--sim", "verilator", "--seed", str(seed),
           "--translations", str(budget), "--seeds", "14", "-k", "random_mix and default", *specs]
    proc = subprocess.run(cmd, env=env, cwd=R.PKG_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"seed {seed}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    for h in hosts:  # both gateways ran a batch, on their own disk
        assert list((h / "records").glob("test_volume-random_mix-default-b*.json")), f"no batch ran on {h}"
    recs = records.load(controller / "results")  # the records, not pytest's counts beside them
    batches = [r for r in recs if r.get("batch")]
    seeds = [r for r in recs if not r.get("batch")]
    assert sorted(b["batch"]["first_seed"] for b in batches) == [seed, seed + 1000]
    assert len(seeds) == sum(b["batch"]["seeds"] for b in batches) >= 2
    assert all(r["passed"] for r in recs)
    checked = sum(r["scoreboard"]["checked"] for r in seeds)
    assert checked >= 2 * -(-budget // 14)  # each batch ran until its share of the budget was checked
    assert f"{checked} translations checked" in proc.stdout
