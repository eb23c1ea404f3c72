"""The replacement units of hw/replacement.py in Amaranth's simulator, against docs/reference.md
and the reference policies of model/reference/ref_replacement.py."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from hw.replacement import LFSR_TAPS, Replacement
from model.config import Policy
from model.reference.ref_replacement import FIFO, LRU, TreePLRU, lfsr_step


def simulate(unit: Replacement, script):
    """Run ``script(ctx, unit)`` (an async testbench) on ``unit``."""
    sim = Simulator(unit)
    sim.add_clock(1e-8, if_exists=True)  # a one-way unit has no state and no clock domain
    result = {}

    async def bench(ctx):
        result["value"] = await script(ctx)

    sim.add_testbench(bench)
    sim.run()
    return result["value"]


async def victim(ctx, unit, s=0):
    ctx.set(unit.set, s)
    return ctx.get(unit.victim)


async def touch(ctx, unit, way, s=0):
    ctx.set(unit.set, s)
    ctx.set(unit.way, way)
    ctx.set(unit.touch, 1)
    await ctx.tick()
    ctx.set(unit.touch, 0)


async def advance(ctx, unit, s=0):
    ctx.set(unit.set, s)
    ctx.set(unit.advance, 1)
    await ctx.tick()
    ctx.set(unit.advance, 0)


def test_plru_hand_worked_sequence():
    """4 ways, nodes 1 (root), 2 (ways 0/1), 3 (ways 2/3), all bits 0 at reset.

    victim 0 (1:0 left, 2:0 left); touch 0 -> bits 1=1, 2=1: victim 2 (1:1 right, 3:0 left);
    touch 2 -> 1=0, 3=1: victim 1 (1:0 left, 2:1 right); touch 1 -> 1=1, 2=0: victim 3;
    touch 3 -> 1=0, 3=0: victim 0 again.  A hit on 0 then moves the victim to 2.
    """
    unit = Replacement(Policy.PLRU, 1, 4)

    async def script(ctx):
        seen = [await victim(ctx, unit)]
        for _ in range(4):
            await touch(ctx, unit, seen[-1])
            seen.append(await victim(ctx, unit))
        await touch(ctx, unit, 0)  # a completing hit
        seen.append(await victim(ctx, unit))
        return seen

    assert simulate(unit, script) == [0, 2, 1, 3, 0, 2]


@pytest.mark.parametrize("policy, sets, ways", [
    (Policy.PLRU, 4, 8), (Policy.PLRU, 1, 2), (Policy.LRU, 2, 4), (Policy.LRU, 1, 16), (Policy.LRU, 1, 2),
    (Policy.FIFO, 4, 4), (Policy.FIFO, 1, 8),
])
def test_policy_matches_reference_model(policy, sets, ways):
    """Random touches and advances: the hardware victim equals the reference's in every set.

    For LRU the order of ways never touched is a reset convention; the reference page only
    asks for the victim once every way of a set is valid, i.e. has been filled (touched),
    so the comparison starts per set once every way was touched.
    """
    rng = random.Random(f"{policy}{sets}{ways}")
    unit = Replacement(policy, sets, ways)
    ref = {Policy.PLRU: TreePLRU, Policy.LRU: LRU, Policy.FIFO: FIFO}[policy](sets, ways)
    ops = [(rng.randrange(sets), rng.random() < 0.7, rng.randrange(ways)) for _ in range(300)]

    async def script(ctx):
        touched = [set() for _ in range(sets)]
        mismatches = []
        for k, (s, is_touch, way) in enumerate(ops):
            got = await victim(ctx, unit, s)
            if len(touched[s]) == ways or policy is not Policy.LRU:
                if got != ref.victim(s):
                    mismatches.append((k, s, got, ref.victim(s)))
            if is_touch:
                await touch(ctx, unit, way, s)
                ref.touch(s, way)
                touched[s].add(way)
            elif policy is Policy.LRU and len(touched[s]) < ways:  # a fill into an invalid way
                way = min(set(range(ways)) - touched[s])
                await touch(ctx, unit, way, s)
                ref.touch(s, way)
                touched[s].add(way)
            else:  # a fill replacing the policy's victim: advance, then touch that way
                ref_way = ref.evict(s)
                ctx.set(unit.touch, 1)
                ctx.set(unit.way, got)
                await advance(ctx, unit, s)
                ctx.set(unit.touch, 0)
                ref.touch(s, ref_way)
                touched[s].add(got)
        return mismatches

    assert simulate(unit, script) == []


def test_lfsr_polynomial_is_maximal():
    """x^16 + x^14 + x^13 + x^11 + 1 in Galois form (taps 0xB400) cycles through all 65535 non-zero states."""
    assert LFSR_TAPS == 0xB400
    s, n = 0xACE1, 0
    while True:
        lsb = s & 1
        s = (s >> 1) ^ (LFSR_TAPS if lsb else 0)
        n += 1
        if s == 0xACE1:
            break
    assert n == 65535


@pytest.mark.parametrize("ways, seed", [(4, 0xACE1), (8, 0x1234), (16, 0x0001)])
def test_random_policy_lfsr_sequence(ways, seed):
    """The victim is the *stepped* state mod ways; the LFSR steps only on ``advance``."""
    unit = Replacement(Policy.RANDOM, 8, ways, seed=seed)
    expected, s = [], seed
    for _ in range(40):
        s = lfsr_step(s)
        expected.append(s % ways)

    async def script(ctx):
        got = []
        for k in range(40):
            v = await victim(ctx, unit, s=k % 8)
            assert v == await victim(ctx, unit, s=(k + 3) % 8)  # one LFSR for every set
            await touch(ctx, unit, (k * 5) % ways, s=k % 8)  # touches never step it
            assert await victim(ctx, unit) == v
            got.append(v)
            await advance(ctx, unit, s=k % 8)
        return got

    assert simulate(unit, script) == expected


def test_single_way_always_victim_zero():
    for policy in Policy:
        unit = Replacement(policy, 2, 1)

        async def script(ctx, unit=unit):  # a one-way unit has no state: nothing to clock
            ctx.set(unit.touch, 1)
            ctx.set(unit.advance, 1)
            return await victim(ctx, unit, s=1)

        assert simulate(unit, script) == 0
