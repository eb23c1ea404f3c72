"""The co-simulation regression: cocotb tests of sim/cocotb_tests/ on Icarus or Verilator ($SIM), through
cocotb_tools.runner.

A pytest module shipped in the package, so that an installed ``mmu sim`` runs it with no source tree
(``tests/test_cosim.py`` collects the same tests for ``make test``).

Each pytest item runs one cocotb test in its own simulator process on the
Verilog build of one configuration (``model.config.PRESETS``; one build per
configuration, shared by the tests and by pytest-xdist workers): the directed
and random hardware tests, the full system (kernel workloads with every access
through the hardware, ``test_fullsys``) and a real trace's prefix through the
hardware (``test_trace_prefix``, ``test_mmu_trace_hw_command``).

Seeds: every test takes SEED from the environment (default: a fresh random
one) and reports it; ``SEEDS=N`` runs every random test N times with seeds
SEED, SEED+1, ... .  A failure prints the mismatch and the replay command.
``WAVES=1`` dumps an FST per test (its path is in the failure message and in
``mmu sim``'s summary).
"""

from __future__ import annotations

import os

import pytest

from model.config import PRESETS
from replay.lackey import SHIPPED_TRACE
from sim import records
from sim import runner as R

# On $SIM (default Icarus); a simulator that is missing or too old fails every test with the install command.
pytestmark = pytest.mark.cocotb

DIRECTED = "mmu_directed"
RANDOM = "mmu_random"

# (cocotb test, configurations it runs on)
DIRECTED_TESTS = [
    ("hit_miss", ("default", "nopwc")),
    ("back_to_back", ("default",)),
    ("page_sizes", ("default",)),
    ("not_present_each_level", ("default",)),
    ("protection_each_level", ("default",)),
    ("reserved_bits", ("default", "nopwc")),
    ("noncanonical", ("default",)),
    ("accessed_dirty", ("default", "nopwc")),
    ("flush_kinds", ("default",)),
    ("flush_during_walk", ("default", "nopwc")),
    ("cr3_pcid_global", ("default",)),
    ("superpage_set_index", ("default", "fifo4")),
    ("smep_smap_wp", ("default",)),
    ("reset_mid_walk", ("default",)),
    ("backpressure", ("default",)),
    ("replacement", ("default", "fa_lru", "fifo4", "random", "nopwc")),
    ("checker_selftest", ("default",)),
    ("self_map", ("default", "nopwc")),
    ("high_physical", ("default", "nopwc", "random")),
    ("multi_match", ("default", "fa_lru")),
]

RANDOM_TESTS = [
    ("random_mix", ("default", "fa_lru", "fifo4", "random", "nopwc")),
    ("random_stress", ("default", "fifo4")),
]

# DRAM timing per (test, config) where it differs from the configuration's (fixed, 4 cycles):
# the fastest memory (a response in the cycle after the request) and a DDR-like one without jitter.
PARAMS = {
    ("random_mix", "fa_lru"): {"dram": {"latency": 1}},
    ("random_mix", "random"): {"dram": {"latency": 0}},
    ("random_mix", "nopwc"): {"dram": {"kind": "ddr", "tRCD": 3, "tCL": 2, "tRP": 3, "banks": 2}},
    ("backpressure", "default"): {},
}


def _seeds() -> int:
    text = os.environ.get("SEEDS", "").strip()
    if not text:
        return 1
    try:
        n = int(text)
    except ValueError:
        raise pytest.UsageError(f"SEEDS={text!r}: must be a positive integer") from None
    if n < 1:
        raise pytest.UsageError(f"SEEDS={n}: must be a positive integer")
    return n


def _params(tests, seeded: bool):
    n = _seeds() if seeded else 1
    out = []
    for test, configs in tests:
        for cfg in configs:
            for i in range(n):
                pid = f"{test}-{cfg}" + (f"-seed{i}" if n > 1 else "")
                out.append(pytest.param(test, cfg, i, id=pid))
    return out


def _run(module: str, test: str, cfg_name: str, index: int, request, params: dict | None = None) -> R.TestOutcome:
    seed = R.seed_for(index)
    test_id = request.node.name.replace("[", "-").rstrip("]")
    outcome = R.run_test(module, test, PRESETS[cfg_name], cfg_name, seed=seed, test_id=test_id,
                         nodeid=request.node.nodeid, params=PARAMS.get((test, cfg_name)) if params is None else params)
    records.attach(request, [outcome.result])
    print(f"{test} on {cfg_name}: seed {seed}, {'passed' if outcome.passed else 'FAILED'}; log {outcome.log}")
    if outcome.waves:
        print(f"waves: {outcome.waves}")
    if not outcome.passed:
        extra = f"\n  simulator log: {outcome.log}"
        if outcome.waves:
            extra += f"\n  waves: {outcome.waves}"
        msg = outcome.message or "failed"
        if "replay:" not in msg:
            msg += f"\n  seed: {seed}\n  replay: {R.replay_command(seed, request.node.nodeid)}"
        pytest.fail(f"{test} on {cfg_name} failed:\n{msg}{extra}", pytrace=False)
    return outcome


@pytest.mark.parametrize("test,cfg_name,index", _params(DIRECTED_TESTS, seeded=False))
def test_directed(test, cfg_name, index, request):
    _run(DIRECTED, test, cfg_name, index, request)


@pytest.mark.parametrize("test,cfg_name,index", _params(RANDOM_TESTS, seeded=True))
def test_random(test, cfg_name, index, request):
    _run(RANDOM, test, cfg_name, index, request)


# The checker's own test: a bug injected on purpose must be caught, with the right kind of message.
SELF_TESTS = [
    ("flip_present", "MISMATCH"),  # DRAM returns a PTE with P cleared: hardware and reference disagree
    ("drop_flush", "MISMATCH"),  # the reference never hears of a FLUSH_ALL: TLB hit/miss disagrees
    ("hang", "watchdog"),  # DRAM stops answering: the watchdog reports where it was stuck
]


@pytest.mark.parametrize("inject,expected", SELF_TESTS, ids=[t[0] for t in SELF_TESTS])
def test_checker_catches(inject, expected, request):
    seed = R.seed_for(0)
    test_id = request.node.name.replace("[", "-").rstrip("]")
    outcome = R.run_test(DIRECTED, "checker_selftest", PRESETS["default"], "default", seed=seed,
                         test_id=test_id, nodeid=request.node.nodeid,
                         params={"inject": inject, "inject_after": 0, "watchdog_cycles": 300})
    assert not outcome.passed, f"injected fault {inject!r} went unnoticed (seed {seed}); log {outcome.log}"
    assert expected in outcome.message, f"injected fault {inject!r}: unexpected message:\n{outcome.message}"
    assert "replay:" in outcome.message, "a failure must print how to replay it"


# --- the whole system: the kernel model's workloads with every access through the hardware (sim/fullsys.py) ---

FULLSYS = "mmu_fullsys"
WORKLOADS_DIR = R.COCOTB_DIR / "workloads"  # smaller versions of the pressure workloads
_DDR_STRESS = {"kind": "ddr", "tRCD": 3, "tCL": 2, "tRP": 3, "banks": 4, "jitter": 3, "ready_drop": 0.1}

# (workload, configuration, params): boot overrides (pcid, aslr, mem, swap), testbench timing (dram,
# resp_stall_prob), and what the run must show: `expect` exact, `expect_min` at least (vmstat names, or
# mmu.COUNTER for a hardware counter).  Every run is also compared with the same workload on the reference MMU.
FULLSYS_TESTS = [
    ("small-malloc", "default", {"aslr": True}),
    ("large-malloc", "fa_lru", {"pcid": True, "expect_min": {"pgfault": 256}}),
    ("stack-growth", "default", {"aslr": True, "dram": {"kind": "ddr", "jitter": 2}, "expect": {"segv": 1},
                                 "expect_min": {"pgfault": 1792}}),
    ("fork-cow", "fifo4", {"pcid": True, "aslr": True, "expect_min": {"cow_fault": 64, "mmu.mem_writes": 1}}),
    # the 1 MiB file is read by readahead (128 KiB windows): one major fault for it, one for the program text
    ("file-mmap", "default", {"resp_stall_prob": 0.2, "expect": {"pgmajfault": 2},
                              "expect_min": {"cow_fault": 16, "nr_written": 64}}),
    ("shared-memory", "fa_lru", {"pcid": True, "expect_min": {"mmu.mem_writes": 1}}),
    ("hugepages", "default", {"expect_min": {"mmu.hits": 1000}}),
    ("hugepages-1g", "default", {"pcid": True}),
    ("segv", "default", {"expect": {"segv": 3}}),
    ("small-oom", "default", {"pcid": True, "expect": {"oom_kill": 1}}),
    ("small-swap", "default", {"aslr": True, "dram": _DDR_STRESS, "resp_stall_prob": 0.1,
                               "expect_min": {"pswpout": 64, "pswpin": 64, "pgactivate": 1, "mmu.mem_writes": 1}}),
]
FULLSYS_REPORT = "small-swap"  # `mmu sim` ends with free and top of the kernel at the end of this workload

TRACE = SHIPPED_TRACE
TRACE_LIMIT = 100000  # 279 walks over 97 pages (the whole trace: 5,022 walks, most after its first 400,000)


def _workload_param(name: str) -> str:
    path = WORKLOADS_DIR / f"{name}.wl"
    return str(path) if path.is_file() else name


def _fullsys_params():
    n = _seeds()
    return [pytest.param(name, cfg, params, i, id=f"{name}-{cfg}" + (f"-seed{i}" if n > 1 else ""))
            for name, cfg, params in FULLSYS_TESTS for i in range(n)]


@pytest.mark.parametrize("name,cfg_name,params,index", _fullsys_params())
def test_fullsys(name, cfg_name, params, index, request):
    """The workload's processes on the hardware MMU: zero mismatches, the kernel's invariants, the same
    faults, shootdowns, output and memory as with the reference MMU, and the workload's own expectations."""
    outcome = _run(FULLSYS, "workload", cfg_name, index, request,
                   params={**params, "workload": _workload_param(name), "report": name == FULLSYS_REPORT})
    fs = outcome.result["extra"]["fullsys"]
    assert fs["translations"] == outcome.result["scoreboard"]["checked"] > 0


def test_checker_catches_lost_shootdown(request):
    """A kernel that forgets its INVLPGs (injected): after `mprotect buf r` the hardware keeps the writable entry
    and the write that must raise SIGSEGV goes through.  The scoreboard cannot see it (its reference MMU is just
    as stale); the comparison with the reference run of the correct kernel must."""
    seed = R.seed_for(0)
    test_id = request.node.name
    outcome = R.run_test(FULLSYS, "workload", PRESETS["default"], "default", seed=seed, test_id=test_id,
                         nodeid=request.node.nodeid, params={"workload": "segv", "inject": "lost_flush_va"})
    assert not outcome.passed, f"a lost shootdown went unnoticed (seed {seed}); log {outcome.log}"
    msg = outcome.message
    assert "not transparent" in msg and "segv hardware 2 reference 3" in msg, msg
    assert "replay:" in msg


def test_trace_prefix(request):
    """A prefix of the checked-in lackey trace through the hardware, pipelined: the counters equal the
    reference replay of the same accesses (computed here again, independently of the simulator's check)."""
    from replay.lackey import read_lackey
    from sim.trace_cosim import COMPARED, reference_counters, trace_prefix

    outcome = _run(FULLSYS, "trace", "default", 0, request, params={"trace": str(TRACE), "limit": TRACE_LIMIT})
    hw = outcome.result["extra"]["trace"]["result"]
    ref = reference_counters(trace_prefix(read_lackey(TRACE), TRACE_LIMIT), PRESETS["default"])
    assert {k: hw[k] for k in COMPARED} == ref
    assert hw["accesses"] == TRACE_LIMIT and hw["cycles"] >= TRACE_LIMIT


def test_mmu_trace_hw_command(capsys):
    """`mmu trace FILE --hw --limit N --json`: the hardware's counters, the DTLB split and cycles, equal to the
    reference replay's counters (the command's own reference path) where they overlap."""
    import json

    from cli.main import main

    assert main(["trace", str(TRACE), "--limit", "3000", "--quiet", "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert main(["trace", str(TRACE), "--limit", "3000", "--hw", "--json", "--seed", str(R.seed_for(0))]) == 0
    captured = capsys.readouterr()
    hw = json.loads(captured.out)
    assert "replay: mmu trace" in captured.err
    assert {k: hw[k] for k in ref if k != "cycles"} == {k: v for k, v in ref.items() if k != "cycles"}
    assert ref["cycles"] is None and hw["cycles"] >= 3000
    assert hw["dtlb_read_misses"] + hw["dtlb_write_misses"] == hw["dtlb_misses"]


# --- volume: a translation budget over many seeds, batched (mmu sim --translations N, make sim TRANSLATIONS=N) ---

VOLUME = "mmu_volume"
VOLUME_MIN_SEEDS = 100  # unless SEEDS says otherwise
BATCH_TRANSLATIONS = 25000  # per simulator start-up (about 20 seeds of random_mix)
SEED_STRIDE = 1000  # batch k runs seeds SEED + k*SEED_STRIDE, +1, ...: batches never share a seed


def _volume_params():
    """One item per batch: the budget split evenly over the random tests and their configurations."""
    text = os.environ.get(R.ENV_VOLUME, "").strip()
    if not text:
        return []
    budget = int(text)
    if budget < 1:
        raise pytest.UsageError(f"{R.ENV_VOLUME}={text}: must be a positive number of translations")
    pairs = [(t, c) for t, configs in RANDOM_TESTS for c in configs]
    per_pair = max(1, -(-budget // (len(pairs) * BATCH_TRANSLATIONS)))
    n = len(pairs) * per_pair
    min_seeds = os.environ.get("SEEDS", "").strip()
    min_seeds = _seeds() if min_seeds else VOLUME_MIN_SEEDS
    return [pytest.param(t, c, i * per_pair + j, -(-budget // n), -(-min_seeds // n), id=f"{t}-{c}-b{j}")
            for i, (t, c) in enumerate(pairs) for j in range(per_pair)]


def _volume(test, cfg_name, batch, budget, min_seeds, request):
    """Seeds of one random test in one simulator start-up until its share of the budget is checked."""
    base = R.base_seed()
    first = (R.fresh_seed() if base is None else base) + batch * SEED_STRIDE
    single = f"{request.node.nodeid.split('::')[0]}::test_random[{test}-{cfg_name}]"
    params = {**PARAMS.get((test, cfg_name), {}), "test": test, "first_seed": first, "budget": budget,
              "min_seeds": min_seeds, "max_seeds": SEED_STRIDE,
              "replay": R.replay_command(0, single).replace("SEED=0", "SEED={seed}")}
    test_id = request.node.name.replace("[", "-").rstrip("]")
    outcome = R.run_test(VOLUME, "batch", PRESETS[cfg_name], cfg_name, seed=first, test_id=test_id,
                         nodeid=request.node.nodeid, params=params)
    per_seed = records.load(outcome.result_file.parent, f"{R._safe(test_id)}-s*.json")
    records.attach(request, [outcome.result, *per_seed])
    batch_info = outcome.result.get("batch") or {}
    print(f"{test} on {cfg_name}: {batch_info.get('seeds', 0)} seeds from {first}, "
          f"{batch_info.get('checked', 0)} translations checked; log {outcome.log}")
    if not outcome.passed:
        failed = [r for r in per_seed if not r.get("passed")]
        msg = "\n".join(f"seed {r['seed']}: {(r.get('failure') or '').strip()}\n  replay: {r.get('replay')}"
                        for r in failed[:3]) or outcome.message
        pytest.fail(f"{test} on {cfg_name}, batch from seed {first}:\n{msg}", pytrace=False)
    assert batch_info["checked"] >= budget or batch_info["seeds"] == SEED_STRIDE
    assert batch_info["seeds"] >= min_seeds


# The volume items exist only in volume mode (an empty parametrisation would show as a skipped test).
if os.environ.get(R.ENV_VOLUME, "").strip():
    test_volume = pytest.mark.parametrize("test,cfg_name,batch,budget,min_seeds", _volume_params())(_volume)
