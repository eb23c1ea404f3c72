"""Co-simulation speed, and what the page-walk cache saves, on Icarus.

    .venv/bin/python bench/bench_cosim.py [--ops N] [--seed N] [--workload W] [--trace-limit N]

Prints:
- translations checked per second with the whole testbench on (drivers, DRAM
  model, scoreboard against the reference MMU),
- the clock rate of the same design with the testbench's per-cycle loop idle,
  and the raw Icarus clock rate with Python idle (GPI clock, one timer),
  measured in the same simulator run, and the ratios;
- DRAM reads per walk and mean walk cycles with the page-walk cache off and on,
  on a workload with locality (hardware counters; the scoreboard checks every
  response on the way, so these are figures of a correct run);
- the full system (sim/fullsys.py): a kernel workload with every access
  translated by the hardware, translations verified per second and the ratio
  to the raw clock rate of the same design, measured in the same run;
- the checked-in lackey trace through the hardware (sim/trace_cosim.py):
  cycles per translation and DRAM reads per walk with the page-walk cache off
  and on.

Rates are per second of wall-clock time and of CPU time of the simulator process
(CPU time is steadier on a loaded machine).  Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.config import PRESETS
from replay.lackey import SHIPPED_TRACE
from sim import runner as R

BENCH_RESULTS = R.SIM_BUILD / "bench_results"  # kept apart from the regression's records
SMALL_SWAP = R.COCOTB_DIR / "workloads" / "small-swap.wl"
TRACE = SHIPPED_TRACE


def _rate(n, t):
    return n / t if t > 0 else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=3000, help="random requests in the speed run (default 3000)")
    ap.add_argument("--seed", type=int, default=1, help="seed (default 1: the same workload every time)")
    ap.add_argument("--workload", default=str(SMALL_SWAP),
                    help="kernel workload of the full-system figures (default: sim/cocotb_tests/workloads/small-swap.wl)")
    ap.add_argument("--trace-limit", type=int, default=100000,
                    help="page accesses of replay/traces/listwalk.lackey.gz sent through the hardware (default 100000)")
    args = ap.parse_args(argv)
    cfg = PRESETS["default"]
    print(f"co-simulation benchmark on Icarus (seed {args.seed}); building the designs if needed ...", flush=True)

    out = R.run_test("mmu_bench", "bench_speed", cfg, "default", seed=args.seed, test_id="bench_speed",
                     params={"ops": args.ops}, waves=False, results_dir=BENCH_RESULTS)
    if not out.passed:
        print(f"bench_speed failed:\n{out.message}\nlog: {out.log}")
        return 1
    ex = out.result["extra"]
    full, idle, raw = ex["full"], ex["idle_loop"], ex["raw_clock"]
    print("\n== speed (config 'default': ITLB 16 FA LRU, DTLB 32x4 PLRU, PWC 8, DRAM fixed 4 cycles)")
    print(f"  full testbench, scoreboard on : {full['translations']} translations in {full['cycles']} cycles, "
          f"{full['wall']:.2f} s wall / {full['cpu']:.2f} s CPU")
    tw, tc = _rate(full["translations"], full["wall"]), _rate(full["translations"], full["cpu"])
    fw, fc = _rate(full["cycles"], full["wall"]), _rate(full["cycles"], full["cpu"])
    iw, ic = _rate(idle["cycles"], idle["wall"]), _rate(idle["cycles"], idle["cpu"])
    rw, rc = _rate(raw["cycles"], raw["wall"]), _rate(raw["cycles"], raw["cpu"])
    print(f"    {tw:10.0f} translations/s wall   {tc:10.0f} translations/s CPU")
    print(f"    {fw:10.0f} cycles/s wall         {fc:10.0f} cycles/s CPU")
    print(f"  testbench loop, nothing to do : {iw:10.0f} cycles/s wall   {ic:10.0f} cycles/s CPU")
    print(f"  raw Icarus, Python idle       : {rw:10.0f} cycles/s wall   {rc:10.0f} cycles/s CPU")
    print(f"  ratio raw clock / full testbench: {rw / fw:.1f}x (wall), {rc / fc:.1f}x (CPU); "
          f"raw / idle loop: {rw / iw:.1f}x")
    print("  (the raw rate is of an idle design: Icarus is event driven, so a busy design costs more per cycle")
    print("   even without Python; the ratio is an upper bound on what the testbench costs)")

    print("\n== page-walk cache, workload with locality (sweeps over 2 MiB regions, then a working set that fits the DTLB)")
    print(f"  {'config':<22} {'walks':>7} {'DRAM reads/walk':>16} {'mean walk cycles':>17} {'PWC hits':>9} "
          f"{'TLB hit rate':>13}")
    for name, c in (("PWC off", cfg.replace(pwc_entries=0)), ("PWC 8 entries", cfg),
                    ("PWC 32 entries", cfg.replace(pwc_entries=32))):
        cname = R.build_name(c)
        out = R.run_test("mmu_bench", "bench_locality", c, cname, seed=args.seed, test_id=f"bench_locality_{cname}",
                         waves=False, results_dir=BENCH_RESULTS)
        if not out.passed:
            print(f"bench_locality ({name}) failed:\n{out.message}\nlog: {out.log}")
            return 1
        hw = out.result["hw_counters"]
        w = hw["walks"] or 1
        print(f"  {name:<22} {hw['walks']:>7} {hw['mem_reads'] / w:>16.2f} {hw['walk_cycles'] / w:>17.1f} "
              f"{100 * hw['pwc_hits'] / w:>8.1f}% {100 * hw['hits'] / max(1, hw['lookups']):>12.1f}%")
    if fullsys(args, cfg) or trace(args, cfg):
        return 1
    return 0


def fullsys(args, cfg) -> int:
    out = R.run_test("mmu_bench", "bench_fullsys", cfg, "default", seed=args.seed, test_id="bench_fullsys",
                     params={"workload": args.workload}, waves=False, results_dir=BENCH_RESULTS)
    if not out.passed:
        print(f"bench_fullsys failed:\n{out.message}\nlog: {out.log}")
        return 1
    fs, raw = out.result["extra"]["fullsys"], out.result["extra"]["raw_clock"]
    sp = fs["speed"]
    n, shoot = fs["translations"], sum(fs["shootdowns"].values())
    tw, tc = _rate(n, sp["wall"]), _rate(n, sp["cpu"])
    fw, fc = _rate(sp["cycles"], sp["wall"]), _rate(sp["cycles"], sp["cpu"])
    rw, rc = _rate(raw["cycles"], raw["wall"]), _rate(raw["cycles"], raw["cpu"])
    print(f"\n== full system: {Path(args.workload).name} on the hardware MMU (config 'default'), seed {args.seed}")
    print(f"  {n} translations verified (page faults {fs['vmstat'].get('pgfault', 0)}, swap out/in "
          f"{fs['vmstat'].get('pswpout', 0)}/{fs['vmstat'].get('pswpin', 0)}) and {shoot} shootdowns acknowledged, "
          f"{sp['cycles']} cycles, {sp['wall']:.2f} s wall / {sp['cpu']:.2f} s CPU")
    print(f"    {tw:10.0f} translations verified/s wall   {tc:10.0f} /s CPU")
    print(f"    {fw:10.0f} cycles/s wall                  {fc:10.0f} cycles/s CPU")
    print(f"  raw Icarus clock, same design, same run: {rw:10.0f} cycles/s wall   {rc:10.0f} cycles/s CPU")
    print(f"  ratio raw clock / full-system clock: {rw / fw:.1f}x (wall), {rc / fc:.1f}x (CPU); "
          f"raw cycles per verified translation: {rw / tw:.1f} (wall), {rc / tc:.1f} (CPU)")
    print(f"  (the full system spends {sp['cycles'] / max(1, n):.1f} simulated cycles per translation: walks, "
          f"DRAM latency, shootdowns; the kernel model runs while the clock is stopped)")
    return 0


def trace(args, cfg) -> int:
    from sim.trace_cosim import run_on_hardware

    print(f"\n== {TRACE.name}, first {args.trace_limit} page accesses through the hardware, pipelined, seed {args.seed}")
    print(f"  {'config':<16} {'cycles':>8} {'cycles/translation':>19} {'walks':>6} {'DRAM reads/walk':>16} "
          f"{'mean walk cycles':>17}")
    for name, c in (("PWC off", cfg.replace(pwc_entries=0)), ("PWC 8 entries", cfg)):
        out = run_on_hardware(str(TRACE), args.trace_limit, c, args.seed,
                              f"python bench/bench_cosim.py --seed {args.seed} --trace-limit {args.trace_limit}")
        if not out.passed:
            print(f"trace ({name}) failed:\n{out.message}\nlog: {out.log}")
            return 1
        t = out.result["extra"]["trace"]
        res = t["result"]
        w = max(1, res["walks"])
        print(f"  {name:<16} {res['cycles']:>8} {res['cycles'] / max(1, res['accesses']):>19.3f} {res['walks']:>6} "
              f"{res['dram_reads'] / w:>16.2f} {t['walk_cycles'] / w:>17.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
