"""Random co-simulation tests: random page tables, random mixes of requests, flushes, CR3 writes,
page-table edits with shootdowns and flag changes, and episodes aimed at one bug class each
(sim/world.py), under random DRAM latency and backpressure.

Every draw comes from the test's SEED (printed at the start and in every failure
message), so a run replays exactly.  Parameters (number of operations, DRAM
timing, stall probabilities) come from ``MMU_COSIM_PARAMS`` set by sim/regression.py.
"""

from __future__ import annotations

import os

from sim import world as W
from sim.cosim import CosimEnv, cosim_test
from sim.world import RandomWorld


def random_flags(rng, world: RandomWorld) -> dict:
    """CR0.WP, EFER.NXE, CR4.SMEP/SMAP; PCIDE toggles now and then when the spaces have PCIDs."""
    flags = dict(wp=rng.random() < 0.8, nxe=rng.random() < 0.75, smep=rng.random() < 0.3, smap=rng.random() < 0.3)
    if world.pcide and rng.random() < 0.15:
        flags["pcide"] = rng.random() < 0.7
    return flags


async def run_steps(env: CosimEnv, world: RandomWorld, steps, max_queue: int) -> int:
    """Execute episode steps (sim/world.py); returns the number of requests submitted."""
    tb = env.tb
    last = None
    base = n = 0
    for step in steps:
        kind = step[0]
        if kind == W.REQ:
            last = tb.submit(*step[1:])
            base = len(tb.store.log)
            n += 1
            while len(tb.req.queue) > max_queue:
                await tb.wait_accepted(tb.req.queue[0])
        elif kind == W.CTL:
            tb.submit_ctl(*step[1:])
        elif kind == W.CYCLES:
            await tb.cycles(step[1])
        elif kind == W.ACCEPTED:
            if last is not None:
                await tb.wait_accepted(last)
        elif kind == W.MEMOPS:
            for _ in range(400):  # about a walk's worst case; the request may make fewer transactions
                if len(tb.store.log) >= base + step[1] or last is None or last.response is not None:
                    break
                await tb.cycles(1)
        elif kind == W.IDLE:
            await tb.wait_idle()
        elif kind == W.FLAGS:
            await env.set_flags(**step[1])
        else:  # EDIT
            await tb.wait_idle()
            for op, value in step[1]():
                tb.submit_ctl(op, value)
    return n


async def random_mix_body(env: CosimEnv) -> None:
    p = env.params
    rng = env.rng
    tb = env.tb
    ops = int(os.environ.get("MMU_COSIM_OPS", "") or p.get("ops", 1500))
    pcide = rng.random() < 0.6
    world = RandomWorld(env, rng, pcide=pcide, spaces=p.get("spaces", 3))
    flags = {**random_flags(rng, world), "pcide": pcide}
    await env.set_flags(**flags)
    world.current = rng.choice(world.spaces)
    await env.write_cr3(world.cr3_of(world.current))
    env.extra["flags0"] = flags
    p_ctl = p.get("p_ctl", 0.03)
    p_edit = p.get("p_edit", 0.02)
    p_flags = p.get("p_flags", 0.006)
    p_wait = p.get("p_wait", 0.04)
    p_episode = p.get("p_episode", 0.04)
    max_queue = p.get("max_queue", 3)
    requests = edits = episodes = 0
    for _ in range(ops):
        r = rng.random()
        if r < p_ctl:
            tb.submit_ctl(*world.random_ctl(world.current))
        elif r < p_ctl + p_edit:
            await tb.wait_idle()
            sp = world.current if rng.random() < 0.8 else rng.choice(world.spaces)
            for op, value in world.kernel_edit(sp):
                tb.submit_ctl(op, value)
            edits += 1
        elif r < p_ctl + p_edit + p_flags:
            await env.set_flags(**random_flags(rng, world))
        elif r < p_ctl + p_edit + p_flags + p_wait:
            await tb.cycles(rng.randrange(1, 40))
        elif r < p_ctl + p_edit + p_flags + p_wait + p_episode:
            requests += await run_steps(env, world, world.episode(), max_queue)
            episodes += 1
        else:
            requests += await run_steps(env, world, [(W.REQ, *world.random_request(world.current))], max_queue)
    await tb.wait_idle()
    env.extra.update(edits=edits, requests=requests, episodes=episodes)


@cosim_test()
async def random_mix(env: CosimEnv):
    """Random page tables and a random mix of requests, flushes, CR3 writes, kernel edits and episodes."""
    await random_mix_body(env)


@cosim_test(dram={"kind": "ddr", "tRCD": 6, "tCL": 5, "tRP": 7, "banks": 4, "row_bytes": 1024, "jitter": 12,
                  "ready_drop": 0.3},
            resp_stall_prob=0.3, req_gap_prob=0.2)
async def random_stress(env: CosimEnv):
    """random_mix under DDR timing with jitter, mem_req.ready drops, resp.ready stalls and request gaps."""
    await random_mix_body(env)
