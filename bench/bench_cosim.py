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

from model.config import PRESETS, hardware_name
from replay.lackey import SHIPPED_TRACE
from sim import backend
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
    ap.add_argument("--sim", choices=backend.SIMULATORS, help="only this simulator (default: both)")
    ap.add_argument("--reps", type=int, default=20,
                    help="times the pure Verilator testbench replays the capture (default 20: long enough to time)")
    ap.add_argument("--speed-only", action="store_true", help="only the speed figures, not the walk-cost ones")
    ap.add_argument("--workload", default=str(SMALL_SWAP),
                    help="kernel workload of the full-system figures (default: sim/cocotb_tests/workloads/small-swap.wl)")
    ap.add_argument("--trace-limit", type=int, default=100000,
                    help="page accesses of replay/traces/listwalk.lackey.gz sent through the hardware (default 100000)")
    args = ap.parse_args(argv)
    cfg = PRESETS["default"]
    sims = [args.sim] if args.sim else list(backend.SIMULATORS)
    print(f"co-simulation benchmark on {', '.join(sims)} (seed {args.seed}); building the designs if needed ...",
          flush=True)
    speeds = {}
    for sim in sims:
        speeds[sim] = speed(args, cfg, sim)
        if speeds[sim] is None:
            return 1
    pure = pure_hdl(args, cfg, sims, speeds)
    if pure is None:
        return 1
    print("\n== summary: checked translations per second of wall-clock (of CPU) time, the same traffic on every line")
    print(f"  {'simulator':<10} {'cocotb testbench':>20} {'pure Verilog tb':>20} {'cocotb / pure':>16}")
    for sim in sims:
        (c, cc), (p, pc) = speeds[sim]["rate"], pure[sim]["rate"]
        print(f"  {sim:<10} {c:>9.0f} ({cc:>8.0f}) {p:>9.0f} ({pc:>8.0f}) {c / p:>7.3f} ({cc / pc:.3f})")
    if len(sims) == 2:
        (vw, vc), (iw, ic) = speeds["verilator"]["rate"], speeds["icarus"]["rate"]
        (pvw, pvc), (piw, pic) = pure["verilator"]["rate"], pure["icarus"]["rate"]
        print(f"  Verilator / Icarus, cocotb testbench: {vw / iw:.1f}x ({vc / ic:.1f}x)   "
              f"pure testbench: {pvw / piw:.1f}x ({pvc / pic:.1f}x)")
    if args.speed_only:
        return 0
    print("\n== page-walk cache, workload with locality (sweeps over 2 MiB regions, then a working set that fits the DTLB)")
    print(f"  {'config':<22} {'walks':>7} {'DRAM reads/walk':>16} {'mean walk cycles':>17} {'PWC hits':>9} "
          f"{'TLB hit rate':>13}")
    for name, c in (("PWC off", cfg.replace(pwc_entries=0)), ("PWC 8 entries", cfg),
                    ("PWC 32 entries", cfg.replace(pwc_entries=32))):
        cname = hardware_name(c)
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


def speed(args, cfg, sim: str) -> dict | None:
    out = R.run_test("mmu_bench", "bench_speed", cfg, "default", seed=args.seed, test_id=f"bench_speed-{sim}",
                     params={"ops": args.ops}, waves=False, results_dir=BENCH_RESULTS, sim=sim)
    if not out.passed:
        print(f"bench_speed on {sim} failed:\n{out.message}\nlog: {out.log}")
        return None
    ex = out.result["extra"]
    full, idle, raw = ex["full"], ex["idle_loop"], ex["raw_clock"]
    print(f"\n== speed on {sim} (config 'default': ITLB 16 FA LRU, DTLB 32x4 PLRU, PWC 8, DRAM fixed 4 cycles)")
    print(f"  full testbench, scoreboard on : {full['translations']} translations in {full['cycles']} cycles, "
          f"{full['wall']:.2f} s wall / {full['cpu']:.2f} s CPU")
    tw, tc = _rate(full["translations"], full["wall"]), _rate(full["translations"], full["cpu"])
    fw, fc = _rate(full["cycles"], full["wall"]), _rate(full["cycles"], full["cpu"])
    iw, ic = _rate(idle["cycles"], idle["wall"]), _rate(idle["cycles"], idle["cpu"])
    rw, rc = _rate(raw["cycles"], raw["wall"]), _rate(raw["cycles"], raw["cpu"])
    print(f"    {tw:10.0f} translations/s wall   {tc:10.0f} translations/s CPU")
    print(f"    {fw:10.0f} cycles/s wall         {fc:10.0f} cycles/s CPU")
    print(f"  testbench loop, nothing to do : {iw:10.0f} cycles/s wall   {ic:10.0f} cycles/s CPU")
    print(f"  idle design, Python idle      : {rw:10.0f} cycles/s wall   {rc:10.0f} cycles/s CPU")
    return {"rate": (tw, tc), "responses": out.result["responses"], "translations": full["translations"]}


def pure_hdl(args, cfg, sims, speeds) -> dict | None:
    """The same traffic replayed by a Verilog testbench (sim/hdl_bench.py), captured once, run on each simulator."""
    from sim import hdl_bench

    bdir = R.build(cfg, "default", waves=False, sim=sims[0])
    out_dir = BENCH_RESULTS / "pure"
    cap = R.run_test("mmu_bench", "bench_capture", cfg, "default", seed=args.seed, test_id="bench_capture",
                     params={"ops": args.ops, "verilog": str(bdir / f"{R.TOPLEVEL}.v"), "out": str(out_dir)},
                     waves=False, results_dir=BENCH_RESULTS, sim=sims[0])
    if not cap.passed:
        print(f"bench_capture failed:\n{cap.message}\nlog: {cap.log}")
        return None
    for sim in sims:  # the capture is the traffic the timed runs made: the same responses in the same cycles
        if cap.result["responses"] != speeds[sim]["responses"]:
            print(f"bench_capture made other traffic than bench_speed on {sim}: {cap.result['responses']} vs "
                  f"{speeds[sim]['responses']}")
            return None
    n = cap.result["responses"]["count"]
    print(f"\n== pure Verilog testbench: the captured inputs of {n} responses replayed, no Python "
          f"({out_dir / 'tb.v'})")
    result = {}
    for sim in sims:
        cmd = hdl_bench.build(sim, bdir / f"{R.TOPLEVEL}.v", out_dir / "tb.v", out_dir)
        reps = args.reps if sim == "verilator" else 1
        r = hdl_bench.run(cmd, out_dir, reps)
        rate = _rate(r.responses, r.wall), _rate(r.responses, r.cpu)
        print(f"  {sim:<10}: {r.responses} responses ({reps} x the capture), {r.cycles} cycles in {r.wall:.2f} s "
              f"wall / {r.cpu:.2f} s CPU: {rate[0]:8.0f} ({rate[1]:.0f}) translations/s, "
              f"{_rate(r.cycles, r.wall):8.0f} ({_rate(r.cycles, r.cpu):.0f}) cycles/s")
        result[sim] = {"rate": rate}
    return result


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
