"""Co-simulation speed and walk-cost measurements (run by bench/bench_cosim.py, not by the regression).

``bench_speed`` measures, in one simulator run on the same design: translations
checked per second with the full testbench (drivers, DRAM model, scoreboard),
the per-cycle rate of the testbench loop with nothing to do, and the raw Icarus
clock rate with Python idle (the per-cycle loop stopped, one Timer for N cycles).

``bench_capture`` runs the same traffic as ``bench_speed``'s first part (same seed: the same requests
in the same cycles) while recording every input of the design, and writes the pure Verilog testbench
that replays it (sim/hdl_bench.py): the simulator's own limit on this traffic.

``bench_locality`` runs a workload with locality (a sweep over 2 MiB regions
plus random touches of a working set larger than the TLB) and records the
hardware's counters: DRAM reads per walk and mean walk cycles, to compare a
configuration with the page-walk cache on and off.

``bench_fullsys`` runs a kernel workload with every access through the hardware
(sim/fullsys.py times the workload itself) and then measures the raw clock rate
of the same design in the same simulator run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.triggers import Timer

from model.x86.pte import Access
from sim import hdl_bench
from sim import runner as R
from sim.cosim import CosimEnv, cosim_test, run_cosim
from sim.fullsys import WorkloadEnv, run_workload_on_hardware
from sim.mmu_driver import CLOCK_PERIOD_NS
from sim.world import RandomWorld


def _clock():
    return time.perf_counter(), time.process_time()


async def random_world(env: CosimEnv) -> RandomWorld:
    world = RandomWorld(env, env.rng, pcide=True, garbage=2)
    world.current = world.spaces[0]
    await env.write_cr3(world.cr3_of(world.current))
    await env.tb.wait_idle()
    return world


async def random_traffic(env: CosimEnv, world: RandomWorld) -> None:
    """Random requests (and a few flushes) over random page tables, every response checked."""
    tb = env.tb
    ops = int(env.params.get("ops", 3000))
    rng = env.rng
    for i in range(ops):
        if rng.random() < 0.02:
            tb.submit_ctl(*world.random_ctl(world.current))
        va, access, user = world.random_request(world.current)
        tb.submit(va, access, user)
        while len(tb.req.queue) > 3:
            await tb.wait_accepted(tb.req.queue[0])
    await tb.wait_idle()


@cosim_test()
async def bench_speed(env: CosimEnv):
    tb = env.tb
    p = env.params
    idle_cycles = int(p.get("idle_cycles", 50000))
    raw_cycles = int(p.get("raw_cycles", 500000))
    world = await random_world(env)
    # 1. full testbench: random requests (and a few flushes), every response checked
    c0, (w0, p0) = tb.cycle, _clock()
    n0 = env.sb.stats.checked
    await random_traffic(env, world)
    (w1, p1), c1 = _clock(), tb.cycle
    checked = env.sb.stats.checked - n0
    env.extra["full"] = {"translations": checked, "cycles": c1 - c0, "wall": w1 - w0, "cpu": p1 - p0}
    await env.finish()
    # 2. the per-cycle loop running with nothing to do
    c0, (w0, p0) = tb.cycle, _clock()
    await Timer(idle_cycles * CLOCK_PERIOD_NS, "ns")
    (w1, p1), c1 = _clock(), tb.cycle
    env.extra["idle_loop"] = {"cycles": c1 - c0, "wall": w1 - w0, "cpu": p1 - p0}
    # 3. raw Icarus: the loop stopped, the clock (a GPI clock, no Python per edge) keeps running
    tb.stop()
    w0, p0 = _clock()
    await Timer(raw_cycles * CLOCK_PERIOD_NS, "ns")
    w1, p1 = _clock()
    env.extra["raw_clock"] = {"cycles": raw_cycles, "wall": w1 - w0, "cpu": p1 - p0}


@cocotb.test()
async def bench_capture(dut):
    params = json.loads(os.environ[R.ENV_PARAMS])
    ports = hdl_bench.port_widths(Path(params["verilog"]), R.TOPLEVEL)
    cap = hdl_bench.InputCapture(dut, ports)
    task = cocotb.start_soon(cap.run())

    async def body(env):
        await random_traffic(env, await random_world(env))

    await run_cosim(dut, body)
    task.cancel()
    hdl_bench.write_testbench(cap, ports, Path(params["out"]))


@cosim_test()
async def bench_locality(env: CosimEnv):
    tb = env.tb
    rng = env.rng
    p = env.params
    pt = env.new_tables()
    await env.write_cr3(pt.pml4)
    # 8 regions of 2 MiB (512 pages each) spread over the address space, mapped with 4 KiB pages
    regions = [0x0000_1000_0000_0000 + i * 0x40_0000_0000 + rng.randrange(64) * 0x20_0000 for i in range(8)]
    pages = []
    for base in regions:
        for k in range(0, 512, 2):
            va = base + k * 0x1000
            pt.map(va, env.alloc_frame(), accessed=True, dirty=True)
            pages.append(va)
    sweeps = int(p.get("sweeps", 2))
    touches = int(p.get("touches", 1500))
    for _ in range(sweeps):  # sequential sweep: neighbours share PT/PD/PDPT
        for va in pages:
            tb.submit(va + 8, Access.READ)
            while len(tb.req.queue) > 3:
                await tb.wait_accepted(tb.req.queue[0])
    hot = rng.sample(pages, 24)  # a working set that fits the DTLB (32 entries)
    for _ in range(touches):
        va = rng.choice(hot) if rng.random() < 0.8 else rng.choice(pages)
        tb.submit(va + rng.randrange(0, 0x1000, 8), Access.WRITE if rng.random() < 0.2 else Access.READ)
        while len(tb.req.queue) > 3:
            await tb.wait_accepted(tb.req.queue[0])
    await tb.wait_idle()


@cosim_test(env_class=WorkloadEnv)
async def bench_fullsys(env: WorkloadEnv):
    """A kernel workload on the hardware (timed in sim/fullsys.py), then the raw clock rate of the same design."""
    await run_workload_on_hardware(env)
    raw_cycles = int(env.params.get("raw_cycles", 200000))
    env.tb.stop()
    (w0, p0) = _clock()
    await Timer(raw_cycles * CLOCK_PERIOD_NS, "ns")
    (w1, p1) = _clock()
    env.extra["raw_clock"] = {"cycles": raw_cycles, "wall": w1 - w0, "cpu": p1 - p0}
