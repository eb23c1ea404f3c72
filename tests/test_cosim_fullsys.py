"""The pure-Python parts of the full-system co-simulation (no simulator needed):
the reference run and the transparency comparison, the workloads of the regression, `mmu sim`'s report,
`mmu trace --limit`.  The simulator runs themselves are in sim/regression.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.cmd_sim import report
from cli.main import main
from model.config import PRESETS, MMUConfig, hardware_name
from model.mm.invariants import check
from replay.lackey import read_lackey
from sim import runner as R
from sim.fullsys import ReferenceTranslator, WorkloadSpec, boot, compare, install, reference_run
from sim.regression import FULLSYS_TESTS, TRACE, _workload_param
from sim.trace_cosim import COMPARED, reference_counters, trace_prefix

CFG = MMUConfig()


# --- the reference run and the comparison ---------------------------------------------------


def test_reference_run_replays_exactly_from_its_seed():
    spec = WorkloadSpec("fork-cow", aslr=True, pcid=True)
    a, b = reference_run(spec, 7, CFG), reference_run(spec, 7, CFG)
    assert a == b and compare(a, b) == []
    assert reference_run(spec, 8, CFG)["memory"] != a["memory"], "with ASLR the seed places the mappings"


def test_compare_names_every_difference():
    ref = reference_run(WorkloadSpec("segv"), 1, CFG)
    hw = json.loads(json.dumps(ref))
    hw["vmstat"]["pgfault"] += 1
    hw["output"] = hw["output"].replace("pid 101", "pid 999")
    hw["memory"] = "0" * 32
    diffs = compare(hw, ref)
    assert len(diffs) == 3
    assert any(d.startswith("vmstat: pgfault hardware") for d in diffs)
    assert any(d.startswith("output line") and "pid 999" in d for d in diffs)


def test_reference_translator_keeps_the_kernel_correct():
    k, ops = boot(WorkloadSpec(_workload_param("small-swap")), 3)
    from model.user.workload import Runner
    ref = ReferenceTranslator(CFG, k)
    install(k, ref)
    Runner(k).run(ops)
    check(k)
    assert ref.translations == ref.ref.counters["lookups"] and ref.answers["not_present"] == k.vmstat["pgfault"]
    assert ref.ref.counters["mem_writes"] > 0, "the MMU sets A bits that aging had cleared"


@pytest.mark.parametrize("name,cfg_name,params", FULLSYS_TESTS, ids=[t[0] for t in FULLSYS_TESTS])
def test_fullsys_expectations_hold_on_the_reference(name, cfg_name, params):
    """The regression's expectations are met by the reference run (the hardware must reproduce it exactly)."""
    spec = WorkloadSpec.from_params({**params, "workload": _workload_param(name)})
    out = reference_run(spec, 1, PRESETS[cfg_name])

    def value(key):
        return out["mmu_counters"][key[4:]] if key.startswith("mmu.") else out["vmstat"].get(key, 0)

    for key, want in params.get("expect", {}).items():
        assert value(key) == want, key
    for key, least in params.get("expect_min", {}).items():
        assert value(key) >= least, key


# --- mmu sim's report --------------------------------------------------------------------------


def _record(test, **extra):
    return {"test": test, "config": "default", "seed": 5, "passed": True, "cycles": 100, "replay": "SEED=5 ...",
            "scoreboard": {"checked": 10, "coverage": {"response: ok 4K read user miss": 10}},
            "hw_counters": {"lookups": 10, "hits": 0, "walks": 10, "walk_cycles": 90, "mem_reads": 10,
                            "mem_writes": 2, "pwc_hits": 9}, "extra": extra}


def test_mmu_sim_report_has_the_full_system_table_trace_coverage_and_views():
    fs = {"workload": "/x/small-swap.wl", "translations": 10, "answers": {}, "shootdowns": {"FLUSH_VA": 4},
          "vmstat": {"pgfault": 5, "pswpout": 3, "pswpin": 2}, "tasks": [], "dmesg": []}
    res = {"accesses": 50, "itlb_misses": 1, "dtlb_misses": 3, "dtlb_read_misses": 2, "dtlb_write_misses": 1,
           "walks": 4, "dram_reads": 5, "faults": 0, "cycles": 60, "seed": 5}
    records = [_record("test_fullsys-small-swap-default", fullsys=fs, reports="== free ==\nMem: 1\n== top ==\n"),
               _record("test_trace_prefix", trace={"name": "t.gz", "records": 50, "pages": 3, "result": res,
                                                   "reference": {k: res[k] for k in COMPARED}})]
    text = report(records, seed=5, wall=1.0, pytest_rc=0)
    assert "small-swap     default           5      10      5" in text and "3/2" in text
    assert "first 50 page accesses (3 pages), pipelined: 60 cycles = 1.200 per translation" in text
    assert "DTLB misses 3 (read 2, write 1)" in text and "equal to the reference replay" in text
    assert "1 of 281 reachable bins hit" in text and "the kernel at the end of small-swap.wl" in text
    assert text.rstrip().endswith("zero mismatches")


# --- mmu trace --limit ---------------------------------------------------------------------------


def test_mmu_trace_limit_replays_the_prefix(capsys):
    assert main(["trace", str(TRACE), "--limit", "20000", "--quiet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in COMPARED} == reference_counters(trace_prefix(read_lackey(TRACE), 20000), CFG)
    assert out["accesses"] == 20000
    assert main(["trace", str(TRACE), "--limit", "20000", "--quiet"]) == 0
    assert "first 20000 of 960425 page accesses" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--limit", "0"], "--limit 0: must be a positive number"),
    (["--seed", "3"], "--seed: only with --hw"),
])
def test_mmu_trace_bad_options(argv, message, capsys):
    assert main(["trace", str(TRACE), *argv]) == 2
    assert capsys.readouterr().err.startswith(f"mmu: error: {message}")


def test_build_names():
    assert hardware_name(MMUConfig()) == "default" and hardware_name(PRESETS["fifo4"]) == "fifo4"
    other = MMUConfig().replace(pwc_entries=0)
    assert hardware_name(other).startswith("cfg-") and hardware_name(other) == hardware_name(other.replace())
    assert hardware_name(R.with_dram(MMUConfig(), latency=9)) == "default", "DRAM timing does not change the build"
    assert Path(R.build_dir_for(hardware_name(other))).parent == R.SIM_BUILD
