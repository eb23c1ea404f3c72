"""Replacement state of one TLB array (or of the page-walk cache), per docs/reference.md.

One :class:`Replacement` component keeps the state of every set of one array
and implements one policy:

- ``lru``: a true-LRU *age matrix* per set: one bit per pair of ways (i < j),
  ``older[i, j] = 1`` meaning way i was used less recently than way j.  Touching
  way w clears the bits of its row and sets those of its column, so w becomes
  the newest; the victim is the way older than every other one.
  ``ways * (ways - 1) / 2`` bits per set.
- ``plru``: tree pseudo-LRU, ``ways - 1`` bits per set, nodes heap-numbered
  (root 1, children 2n and 2n + 1, leaves are the ways in order).  A bit of 0
  says the pseudo-LRU side is the left; touching way w points every node on its
  path away from w; the victim follows the bits from the root.
- ``fifo``: a round-robin pointer per set, advanced (mod ways) only when a
  fill replaces a valid way.
- ``random``: one 16-bit Galois LFSR for the whole array (not per set),
  taps 0xB400, reset value ``seed``; it steps only when a fill replaces a valid
  way, and the victim is the *stepped* state modulo ``ways``.

Flushes never touch this state.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from model.config import Policy

LFSR_TAPS = 0xB400  # x^16 + x^14 + x^13 + x^11 + 1 (Galois, right-shifting)


def lfsr_next(state):
    """The Galois step as an expression: ``s >> 1``, xor taps when the bit shifted out was 1."""
    return Mux(state[0], (state >> 1) ^ LFSR_TAPS, state >> 1)


def lru_pairs(ways: int) -> list[tuple[int, int]]:
    """The (i, j), i < j, pairs of an age matrix, in bit order."""
    return [(i, j) for i in range(ways) for j in range(i + 1, ways)]


def priority_encode(m: Module, bits, width_range: int, name: str):
    """Index of the lowest set bit of ``bits`` (0 when none); a chain of Muxes, lowest wins."""
    out = Signal(range(max(width_range, 1)), name=name)
    expr = Const(0, out.shape())
    for i in reversed(range(len(bits))):
        expr = Mux(bits[i], i, expr)
    m.d.comb += out.eq(expr)
    return out


class Replacement(wiring.Component):
    """Replacement state for ``sets`` sets of ``ways`` ways under ``policy`` (one per CAM).

    Ports (one user at a time: a lookup or a fill, never both in one cycle):

    ``set``      (In, log2 sets) the set the other ports talk about.
    ``touch``    (In, 1) a completing hit or a fill used ``way``: LRU/PLRU update at the end of the cycle.
    ``way``      (In, log2 ways) the way touched.
    ``advance``  (In, 1) a fill replaced the valid victim of ``set``: the FIFO pointer moves
                 on, the LFSR steps (end of the cycle).
    ``victim``   (Out, log2 ways; combinational on ``set``) the way the policy would replace in
                 ``set``: the LRU way, the end of the PLRU path, the FIFO pointer, or the next LFSR
                 state mod ways.
    """

    def __init__(self, policy: Policy, sets: int, ways: int, seed: int = 0xACE1):
        self.policy = Policy(policy)
        self.sets = sets
        self.ways = ways
        self.seed = seed
        if self.policy is Policy.PLRU and ways & (ways - 1):
            raise ValueError(f"plru needs a power-of-two number of ways, not {ways}")
        super().__init__({
            "set": In(range(sets)),
            "touch": In(1),
            "way": In(range(ways)),
            "advance": In(1),
            "victim": Out(range(ways)),
        })

    def elaborate(self, platform):
        m = Module()
        ways, sets = self.ways, self.sets
        policy = self.policy

        if ways == 1:
            m.d.comb += self.victim.eq(0)
            return m

        if policy is Policy.LRU:
            pairs = lru_pairs(ways)
            # Reset order: way n-1 oldest ... way 0 newest (every pair bit 0).  The order only matters
            # once all ways are valid, and by then every way has been touched by its fill.
            state = [Signal(len(pairs), name=f"lru_age_s{s}", init=0) for s in range(sets)]
            cur = Signal(len(pairs), name="lru_age_cur")
            m.d.comb += cur.eq(Array(state)[self.set] if sets > 1 else state[0])
            older = {p: cur[k] for k, p in enumerate(pairs)}
            # victim: the way older than every other way
            is_oldest = Signal(ways, name="lru_oldest")
            for v in range(ways):
                conds = [older[(v, j)] for j in range(v + 1, ways)] + [~older[(i, v)] for i in range(v)]
                c = conds[0]
                for x in conds[1:]:
                    c = c & x
                m.d.comb += is_oldest[v].eq(c)
            m.d.comb += self.victim.eq(priority_encode(m, is_oldest, ways, "lru_victim"))
            # touch: the touched way becomes newer than every other way
            new = Signal(len(pairs), name="lru_age_new")
            for k, (i, j) in enumerate(pairs):
                m.d.comb += new[k].eq(Mux(self.way == i, 0, Mux(self.way == j, 1, cur[k])))
            with m.If(self.touch):
                for s in range(sets):
                    with m.If(self.set == s):
                        m.d.sync += state[s].eq(new)

        elif policy is Policy.PLRU:
            levels = ceil_log2(ways)
            # bit n of a set's vector is node n (bit 0 unused, kept so node numbers read as in the docs)
            state = [Signal(ways, name=f"plru_tree_s{s}") for s in range(sets)]
            cur = Signal(ways, name="plru_tree_cur")
            m.d.comb += cur.eq(Array(state)[self.set] if sets > 1 else state[0])
            # victim: follow the bits from the root
            node = Const(1, range(2 * ways))
            for _ in range(levels):
                node = Cat(Array(cur)[node], node[:levels])  # 2 * node + bit
            m.d.comb += self.victim.eq(node[:levels])
            # touch: every node on the way's path points away from it
            new = Signal(ways, name="plru_tree_new")
            m.d.comb += new.eq(cur)
            for w in range(ways):
                with m.If(self.way == w):
                    leaf = ways + w
                    while leaf > 1:
                        parent = leaf >> 1
                        m.d.comb += new[parent].eq(0 if leaf & 1 else 1)  # left child touched -> point right
                        leaf = parent
            with m.If(self.touch):
                for s in range(sets):
                    with m.If(self.set == s):
                        m.d.sync += state[s].eq(new)

        elif policy is Policy.FIFO:
            ptrs = [Signal(range(ways), name=f"fifo_ptr_s{s}") for s in range(sets)]
            cur = Signal(range(ways), name="fifo_ptr_cur")
            m.d.comb += cur.eq(Array(ptrs)[self.set] if sets > 1 else ptrs[0])
            m.d.comb += self.victim.eq(cur)
            with m.If(self.advance):
                for s in range(sets):
                    with m.If(self.set == s):
                        m.d.sync += ptrs[s].eq(cur + 1)  # wraps: ways is a power of two

        elif policy is Policy.RANDOM:
            lfsr = Signal(16, name="lfsr", init=self.seed)
            stepped = Signal(16, name="lfsr_next")
            m.d.comb += [stepped.eq(lfsr_next(lfsr)), self.victim.eq(stepped[:ceil_log2(ways)])]
            with m.If(self.advance):
                m.d.sync += lfsr.eq(stepped)
        else:  # pragma: no cover
            raise ValueError(policy)
        return m
