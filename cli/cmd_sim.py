"""`mmu sim`: the co-simulation regression on Icarus or Verilator, with a readable summary.

    mmu sim [--sim icarus|verilator] [--seed N] [--seeds N] [--translations N] [--waves] [-k EXPR]
            [-j WORKERS | --tx SPEC ...] [--coverage-gate | --no-coverage-gate]

Runs ``pytest sim/regression.py`` (pytest-xdist across the cores): the
hardware unit regression, the full-system runs (kernel workloads with every
access through the hardware, sim/fullsys.py) and a real trace's prefix through
the hardware, every response checked against the reference MMU.  Then prints
the full-system table and the trace's figures, the functional coverage report
(sim/coverage.py, aggregated over every test's record), ``free`` and ``top``
of the kernel at the end of one workload, and the summary: tests
passed/failed, translations checked, TLB hit rate, walks, mean walk cycles,
DRAM reads per walk, faults by type, and for each failure its message and the
command that replays it.  ``make sim`` runs it; the Makefile's SIM, SEED, SEEDS
and WAVES variables arrive as environment variables and are honoured (options win).
A simulator that is missing or too old stops the run at once with one line naming
the install command (sim/backend.py).

Without a seed a fresh one is drawn and printed, and every test uses it, so
``mmu sim --seed N`` (or ``make sim SEED=N``) replays the whole run.

Volume: ``--translations N`` (``make sim TRANSLATIONS=N``) runs only the random
tests, over at least 100 seeds (``--seeds`` changes that), in batches of seeds
per simulator start-up, until N translations have been checked
(``test_volume`` in sim/regression.py).  ``--tx SPEC`` (repeatable) hands the
items to pytest-xdist gateways instead of local workers: ``--tx 2*popen``, or
``--tx ssh=HOST//python=/path/to/.venv/bin/python//chdir=/path/to/checkout``
for another machine (docs/verification.md); each worker builds the designs it
needs, and the records come back with pytest's reports (sim/records.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from model.config import PRESETS
from model.errors import UserError
from sim import backend, coverage, records
from sim import runner as R

FAULT_NAMES = {
    "not_present": "not present",
    "protection": "protection",
    "reserved": "reserved bit",
    "noncanonical": "non-canonical",
}


def register(sub) -> None:
    p = sub.add_parser("sim", help="run the co-simulation regression on Icarus or Verilator and print a summary",
                       description="Run the co-simulation regression (directed, random and full-system cocotb tests, "
                                   "every response checked against the reference MMU) on Icarus or Verilator and "
                                   "print its summary.")
    p.add_argument("--sim", choices=backend.SIMULATORS, help="simulator (default: $SIM, else icarus)")
    p.add_argument("--seed", type=str, metavar="N", help="seed of every test (default: $SEED, else a fresh one)")
    p.add_argument("--seeds", type=int, metavar="N", help="run every random test with N seeds: SEED, SEED+1, ...")
    p.add_argument("--waves", action="store_true", help="dump an FST waveform per test (also: WAVES=1)")
    p.add_argument("--translations", type=int, metavar="N",
                   help="volume mode: only the random tests, batched, until N translations are checked over at "
                        "least 100 seeds (or --seeds)")
    p.add_argument("-k", dest="expr", metavar="EXPR", help="only the tests whose name matches (pytest -k)")
    p.add_argument("-j", "--jobs", metavar="N", default="auto",
                   help="parallel workers (pytest-xdist -n; default: auto = one per core; 0 = no xdist)")
    p.add_argument("--tx", action="append", metavar="SPEC",
                   help="an execnet gateway for pytest-xdist instead of -j, e.g. 2*popen or "
                        "ssh=HOST//python=.venv/bin/python//chdir=CHECKOUT (repeatable)")
    gate = p.add_mutually_exclusive_group()
    gate.add_argument("--coverage-gate", dest="gate", action="store_const", const=True,
                      help="fail on a reachable coverage bin never hit (default: with SEEDS >= 2 or --translations, "
                           "where coverage accumulates over many seeds)")
    gate.add_argument("--no-coverage-gate", dest="gate", action="store_const", const=False,
                      help="report coverage without failing on a reachable bin never hit")
    p.add_argument("--junitxml", metavar="FILE", help="also write pytest's JUnit XML report of the run (for CI)")
    p.add_argument("--list", action="store_true", help="print the test names -k matches, one a line, and exit")
    p.add_argument("--results", metavar="DIR", help=f"aggregate an earlier run's records only (default dir: "
                                                    f"{R.RESULTS_DIR})")
    p.set_defaults(func=run)


def _seed_text(args) -> str:
    text = args.seed if args.seed is not None else os.environ.get("SEED", "").strip()
    if not text:
        return str(R.fresh_seed())
    try:
        return str(int(text, 0))
    except ValueError:
        raise UserError(f"--seed {text!r}: must be an integer (decimal or 0x...)") from None


def run(args: argparse.Namespace) -> int:
    if args.results:
        if not Path(args.results).is_dir():
            raise UserError(f"--results {args.results}: not a directory (the records of an earlier mmu sim run are "
                            f"in {R.RESULTS_DIR})")
        recs = records.load(Path(args.results))
        print(report(recs, seed=None, wall=None, pytest_rc=None))
        failed = coverage_gate(recs) if args.gate is not False else 0
        return 0 if recs and all(r.get("passed") for r in recs) and not failed else 1
    if args.list:
        return list_tests(args)
    sim = backend.selected(args.sim)
    backend.require(sim)
    seed = _seed_text(args)
    seeds = args.seeds
    if seeds is None:
        env_seeds = os.environ.get("SEEDS", "").strip()
        if env_seeds:
            try:
                seeds = int(env_seeds)
            except ValueError:
                raise UserError(f"SEEDS={env_seeds!r}: must be a positive integer") from None
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds {seeds}: must be a positive integer")
    translations = args.translations
    if translations is None and os.environ.get("TRANSLATIONS", "").strip():
        try:
            translations = int(os.environ["TRANSLATIONS"])
        except ValueError:
            raise UserError(f"TRANSLATIONS={os.environ['TRANSLATIONS']!r}: must be a positive integer") from None
    if translations is not None and translations < 1:
        raise UserError(f"--translations {translations}: must be a positive integer")
    waves = args.waves or R.waves_requested()
    if args.jobs != "auto":
        try:
            if int(args.jobs) < 0:
                raise ValueError
        except ValueError:
            raise UserError(f"-j {args.jobs!r}: must be 'auto' or a number >= 0") from None

    env = dict(os.environ)
    env["SIM"] = sim
    env["SEED"] = seed
    if seeds is not None:
        env["SEEDS"] = str(seeds)
    else:
        env.pop("SEEDS", None)
    env["WAVES"] = "1" if waves else ""
    for k in R.ENV_NAMES:
        env.pop(k, None)
    env.pop(R.ENV_VOLUME, None)
    if translations:
        env[R.ENV_VOLUME] = str(translations)
    env[R.ENV_RESULTS_DIR] = str(R.RESULTS_DIR)

    # fresh records for this run
    R.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for f in R.RESULTS_DIR.glob("*.json"):
        f.unlink()

    # by package name for gateways, which find it in their own installation (a path would have to be rsynced)
    target = ["--pyargs", "sim.regression"] if args.tx else [str(R.REGRESSION)]
    cmd = [sys.executable, "-m", "pytest", *target, "-q", "-p", "no:cacheprovider", "-p", "sim.records",
           "-o", "addopts=", "--no-header", "--show-capture=no"]
    if args.tx:
        cmd += [a for spec in args.tx for a in ("--tx", spec)] + ["--dist", "load"]
    elif args.jobs != "0":
        cmd += ["-n", str(args.jobs)]
    if args.junitxml:
        cmd += ["--junitxml", str(Path(args.junitxml).resolve())]
    expr = " and ".join(f"({e})" for e in (args.expr, "test_volume" if translations else None) if e)
    if expr:
        cmd += ["-k", expr]
    volume = f", volume: {translations} translations over at least {seeds or 100} seeds" if translations else ""
    print(f"mmu sim: {sim}, seed {seed}" + (f", {seeds} seeds per random test" if seeds and not translations else "")
          + volume
          + (", waves on" if waves else ""), flush=True)
    print("  " + " ".join(cmd[1:]), flush=True)
    t0 = time.monotonic()
    rc = subprocess.call(cmd, env=env)
    wall = time.monotonic() - t0
    recs = records.load(R.RESULTS_DIR)
    print()
    print(report(recs, seed=seed, wall=wall, pytest_rc=rc, counts=records.outcomes(R.RESULTS_DIR)))
    if rc == 5:  # pytest: no tests collected
        raise UserError(f"-k {args.expr!r}: no co-simulation test matches" if args.expr else "no tests collected")
    if args.expr:  # part of the regression: its coverage is reported, not gated
        print(f"coverage gate skipped: -k {args.expr!r} runs part of the regression")
        return 0 if rc == 0 else 1
    gated = args.gate if args.gate is not None else bool(translations or (seeds or 1) >= 2)
    if not gated:
        missed = coverage.missed(*coverage_counts(recs))
        print(f"coverage gate not applied to a single-seed run ({len(missed)} reachable bins unhit, listed above); "
              "SEEDS=N (N >= 2) or --coverage-gate applies it")
        return 0 if rc == 0 else 1
    return 0 if rc == 0 and not coverage_gate(recs) else 1


def list_tests(args) -> int:
    """The regression's test names (what -k matches), as pytest collects them."""
    cmd = [sys.executable, "-m", "pytest", str(R.REGRESSION), "--collect-only", "-q", "-p", "no:cacheprovider",
           "-o", "addopts=", "--no-header"] + (["-k", args.expr] if args.expr else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    names = [line.split("::", 1)[1] for line in out.stdout.splitlines() if "::" in line]
    if out.returncode not in (0, 5) or (out.returncode == 5 and not args.expr):
        raise UserError(f"cannot list the regression's tests: {(out.stdout + out.stderr).strip().splitlines()[-1:]}")
    if not names:
        raise UserError(f"-k {args.expr!r}: no co-simulation test matches")
    print("\n".join(names))
    return 0


def report(records: list[dict], *, seed, wall, pytest_rc, counts: dict[str, int] | None = None) -> str:
    """Everything `mmu sim` prints at the end: the summary, the full-system runs, coverage, the kernel's views."""
    parts = [fullsys_summary(records), coverage_summary(records) if records else "", kernel_views(records),
             summarize(records, seed=seed, wall=wall, pytest_rc=pytest_rc, counts=counts)]
    return "\n\n".join(p for p in parts if p)


def _pct(a: float, b: float) -> str:
    return f"{100.0 * a / b:.1f} %" if b else "n/a"


def summarize(records: list[dict], *, seed, wall, pytest_rc, counts: dict[str, int] | None = None) -> str:
    batches = [r for r in records if r.get("batch")]  # volume mode: each seed has its own record too
    records = [r for r in records if not r.get("batch")]
    passed = [r for r in records if r.get("passed")]
    failed = [r for r in records if not r.get("passed")]
    # Self-tests of the checker fail on purpose inside; pytest counts them as passed when caught.
    expected_fail = [r for r in failed if self_test(r)]
    failed = [r for r in failed if r not in expected_fail]
    checked = hits = lookups = walks = walk_cycles = reads = writes = pwc_hits = cycles = 0
    faults: Counter = Counter()
    flushes: Counter = Counter()
    during = 0
    per_cfg: dict[str, list[int]] = {}
    ddr = Counter()
    for r in records:
        if r in expected_fail:
            continue
        sb = r.get("scoreboard") or {}
        hw = r.get("hw_counters") or {}
        checked += sb.get("checked", 0)
        cycles += r.get("cycles", 0)
        faults.update(sb.get("faults", {}))
        dr = r.get("dram") or {}
        for k in ("row_hits", "row_misses", "row_conflicts", "ready_drops", "resp_stall_cycles", "reads",
                  "read_latency_total"):
            ddr[k] += dr.get(k, 0)
        flushes.update(sb.get("flushes", {}))
        during += sb.get("flushes_during_walk", 0)
        if hw:  # the hardware's own counters (compared with the reference at the end of each test)
            hits += hw.get("hits", 0)
            lookups += hw.get("lookups", 0)
            walks += hw.get("walks", 0)
            walk_cycles += hw.get("walk_cycles", 0)
            reads += hw.get("mem_reads", 0)
            writes += hw.get("mem_writes", 0)
            pwc_hits += hw.get("pwc_hits", 0)
            c = per_cfg.setdefault(r.get("config", "?"), [0, 0, 0, 0, 0])
            c[0] += hw.get("lookups", 0)
            c[1] += hw.get("hits", 0)
            c[2] += hw.get("walks", 0)
            c[3] += hw.get("mem_reads", 0)
            c[4] += hw.get("walk_cycles", 0)
    lines = ["== co-simulation summary " + "=" * 54]
    if counts is not None:  # pytest's own count: a test is one pytest item, whatever records it wrote
        head = f"tests: {counts['passed']} passed, {counts['failed'] + counts['error']} failed"
        head += f", {counts['skipped']} skipped" if counts["skipped"] else ""
    else:
        head = f"tests: {len(passed) + len(expected_fail)} passed, {len(failed)} failed"
    if seed is not None:
        head += f"   seed {seed}"
    if wall is not None:
        head += f"   wall {wall:.0f} s"
    lines.append(head)
    if pytest_rc not in (None, 0) and not failed:
        lines.append(f"pytest exited with status {pytest_rc} (see its output above)")
    lines.append(f"{checked} translations checked against the reference MMU, {cycles} cycles simulated"
                 + (f"; {sum(b['batch']['seeds'] for b in batches)} seeds in {len(batches)} simulator start-ups"
                    if batches else ""))
    sims = Counter(r.get("simulator", "?").split()[0] for r in records if r.get("simulator"))
    if sims:
        lines.append("simulator: " + ", ".join(f"{k} ({v} runs)" for k, v in sorted(sims.items())))
    if lookups or not failed:
        lines.append(f"TLB: {hits} hits / {lookups} lookups = {_pct(hits, lookups)} hit rate")
    else:  # a test that stopped at a mismatch compares no counters: zeros would read as measured
        lines.append("TLB: no hardware counters (every test that ran stopped before comparing them)")
    lines.append(f"walks: {walks}   mean walk cycles: {walk_cycles / walks:.1f}   DRAM reads per walk: "
                 f"{reads / walks:.2f}   PWC hits: {_pct(pwc_hits, walks)} of walks   A/D writes: {writes}"
                 if walks else "walks: 0")
    lines.append("faults: " + (", ".join(f"{FAULT_NAMES.get(k, k)} {v}" for k, v in sorted(faults.items())
                                         if k != "ok") or "none") + f"   (successful translations: {faults['ok']})")
    if flushes:
        lines.append("control operations: " + ", ".join(f"{k} {v}" for k, v in sorted(flushes.items()))
                     + f"   ({during} accepted while a request was in flight)")
    rows = ddr["row_hits"] + ddr["row_misses"] + ddr["row_conflicts"]
    if ddr["reads"]:
        line = f"DRAM: {ddr['reads']} reads, mean latency {ddr['read_latency_total'] / ddr['reads']:.1f} cycles"
        if rows:
            line += (f"; DDR-timed accesses: {_pct(ddr['row_hits'], rows)} row hits, "
                     f"{_pct(ddr['row_misses'], rows)} idle-bank, {_pct(ddr['row_conflicts'], rows)} conflicts")
        line += f"; mem_req.ready drops {ddr['ready_drops']}"
        lines.append(line)
    if per_cfg:
        lines.append("by configuration:   lookups  hit rate   walks  reads/walk  cycles/walk")
        for name, (lk, h, w, rd, wc) in sorted(per_cfg.items()):
            lines.append(f"  {name:<14} {lk:>9}  {_pct(h, lk):>8}  {w:>6}  {rd / w if w else 0:>10.2f}  "
                         f"{wc / w if w else 0:>11.1f}")
    waves = [r["waves"] for r in records if r.get("waves")]
    if waves:
        lines.append("waveforms (FST, e.g. gtkwave or surfer):")
        lines.extend(f"  {w}" for w in waves)
    if failed:
        lines.append("")
        lines.append(f"FAILED ({len(failed)}):")
        for r in failed:
            msg = (r.get("failure") or "failed").strip().splitlines()
            lines.append(f"- {r.get('test')}  (config {r.get('config')}, seed {r.get('seed')})")
            keep = [ln for ln in msg[:8]]
            lines.extend(f"    {ln}" for ln in keep)
            replay = r.get("replay")
            if replay and not any("replay:" in ln for ln in keep):
                lines.append(f"    replay: {replay}")
            if r.get("log"):
                lines.append(f"    log: {r['log']}")
    elif records:
        lines.append("zero mismatches")
    else:
        lines.append("no result records were written (did any co-simulation test run?)")
    return "\n".join(lines)


def self_test(record: dict) -> bool:
    """A self-test of the checker: a bug injected on purpose (its failure is the expected outcome)."""
    return record.get("test", "").startswith("test_checker_catches")


def fullsys_summary(records: list[dict]) -> str:
    """The whole-system runs (sim/fullsys.py) and the trace through the hardware (sim/trace_cosim.py)."""
    runs = [r for r in records if (r.get("extra") or {}).get("fullsys") and not self_test(r)]
    traces = [r for r in records if (r.get("extra") or {}).get("trace")]
    lines = []
    if runs:
        lines.append("full system: kernel workloads, every access translated by the hardware MMU, every shootdown "
                     "acknowledged on its control port")
        lines.append(f"  {'workload':<14} {'config':<8} {'seed':>10} {'transl.':>7} {'faults':>6} {'major':>5} {'COW':>4} "
                     f"{'swap out/in':>11} {'OOM':>3} {'SEGV':>4} {'shootdowns':>10} {'A/D wr':>6} {'cycles':>7}  result")
        for r in sorted(runs, key=lambda r: r.get("test", "")):
            fs = r["extra"]["fullsys"]
            vm = fs.get("vmstat", {})
            hw = r.get("hw_counters") or {}
            name = Path(fs["workload"]).stem if fs["workload"].endswith(".wl") else fs["workload"]
            result = "same as the reference run" if r.get("passed") else "FAILED"
            lines.append(f"  {name:<14} {r.get('config', '?'):<8} {r.get('seed', '?'):>10} {fs['translations']:>7} "
                         f"{vm.get('pgfault', 0):>6} "
                         f"{vm.get('pgmajfault', 0):>5} {vm.get('cow_fault', 0):>4} "
                         f"{str(vm.get('pswpout', 0)) + '/' + str(vm.get('pswpin', 0)):>11} {vm.get('oom_kill', 0):>3} "
                         f"{vm.get('segv', 0):>4} {sum(fs['shootdowns'].values()):>10} {hw.get('mem_writes', 0):>6} "
                         f"{r.get('cycles', 0):>7}  {result}")
    for r in traces:
        t = r["extra"]["trace"]
        res = t["result"]
        walks = res["walks"] or 1
        lines.append(f"trace through the hardware: {Path(t['name']).name}, first {res['accesses']} page accesses "
                     f"({t['pages']} pages), pipelined: {res['cycles']} cycles = "
                     f"{res['cycles'] / max(1, res['accesses']):.3f} per translation")
        lines.append(f"  ITLB misses {res['itlb_misses']}, DTLB misses {res['dtlb_misses']} (read "
                     f"{res['dtlb_read_misses']}, write {res['dtlb_write_misses']}), walks {res['walks']}, DRAM reads "
                     f"{res['dram_reads']} ({res['dram_reads'] / walks:.2f} per walk), faults {res['faults']}: "
                     + ("equal to the reference replay" if all(res[k] == v for k, v in t["reference"].items())
                        else f"the reference replay gives {t['reference']}"))
    return "\n".join(lines)


def coverage_counts(records: list[dict]) -> tuple[Counter, list]:
    """The coverage bins summed over the records, and the configurations that ran (their TLB geometries)."""
    counts: Counter = Counter()
    names = []
    for r in records:
        if not self_test(r):  # injected bugs: not the design's behaviour
            counts.update((r.get("scoreboard") or {}).get("coverage", {}))
            if r.get("config") in PRESETS and r["config"] not in names:
                names.append(r["config"])
    return counts, [PRESETS[n] for n in names]


def coverage_summary(records: list[dict]) -> str:
    return coverage.report(*coverage_counts(records))


def coverage_gate(records: list[dict]) -> int:
    """1 (and the bins named) when a reachable coverage bin was never hit, else 0."""
    miss = coverage.missed(*coverage_counts(records))
    if not miss:
        return 0
    shown = "; ".join(miss[:12]) + (f"; ... ({len(miss) - 12} more, listed above)" if len(miss) > 12 else "")
    print(f"coverage gate FAILED: {len(miss)} reachable bins never hit: {shown}")
    return 1


def kernel_views(records: list[dict]) -> str:
    """free and top of the kernel at the end of the workload the regression marks for it."""
    for r in records:
        text = (r.get("extra") or {}).get("reports")
        if text:
            name = r["extra"]["fullsys"]["workload"]
            return f"the kernel at the end of {Path(name).name} on the hardware MMU (seed {r.get('seed')}):\n{text}"
    return ""
