"""The four TLB replacement policies, exactly as docs/reference.md defines them.

Each policy keeps its state per set and answers three questions: ``touch`` (a
completing hit or a fill used this way), ``victim`` (which valid way would go,
without changing anything: a preview for tests and the explainer) and
``evict`` (choose that way and advance whatever state the choice consumes: the
FIFO pointer, the LFSR).  Choosing an invalid way first is the caller's job,
because the reference page says the policy is consulted only when every way of
the set is valid.
"""

from __future__ import annotations

from model.config import Policy

LFSR_TAPS = 0xB400  # x^16 + x^14 + x^13 + x^11 + 1, Galois form


def lfsr_step(state: int) -> int:
    """One step of the 16-bit Galois LFSR that drives the ``random`` policy."""
    lsb = state & 1
    state >>= 1
    return state ^ LFSR_TAPS if lsb else state


class LRU:
    """True LRU: each way carries the time of its last use; the victim is the oldest.

    A global use counter stands in for the hardware's age matrix: the order it
    induces on the ways of a set is the same, and a touch stays O(1).
    """

    def __init__(self, sets: int, ways: int) -> None:
        self._stamp = [[0] * ways for _ in range(sets)]
        self._clock = 0

    def touch(self, s: int, way: int) -> None:
        self._clock += 1
        self._stamp[s][way] = self._clock

    def victim(self, s: int) -> int:
        stamps = self._stamp[s]
        return stamps.index(min(stamps))

    evict = victim


class TreePLRU:
    """Tree pseudo-LRU with ``ways - 1`` bits per set, nodes numbered heap-style.

    Node 1 is the root, node n has children 2n and 2n+1, and the leaves
    ``ways .. 2*ways-1`` are the ways in order.  A bit of 0 says the pseudo-LRU
    side is the left (lower ways).  The bits of a set live in one int (bit n =
    node n), and touching way w is one mask-and-set precomputed per way.
    """

    def __init__(self, sets: int, ways: int) -> None:
        self._ways = ways
        self._bits = [0] * sets
        self._clear: list[int] = []
        self._set: list[int] = []
        for way in range(ways):
            node, path, away = ways + way, 0, 0
            while node > 1:
                parent = node >> 1
                path |= 1 << parent
                if not node & 1:  # way is on the left: point the pseudo-LRU side right
                    away |= 1 << parent
                node = parent
            self._clear.append(~path)
            self._set.append(away)

    def touch(self, s: int, way: int) -> None:
        self._bits[s] = (self._bits[s] & self._clear[way]) | self._set[way]

    def victim(self, s: int) -> int:
        bits, node, ways = self._bits[s], 1, self._ways
        while node < ways:
            node = 2 * node + ((bits >> node) & 1)
        return node - ways

    evict = victim

    def node_bits(self, s: int) -> dict[int, int]:
        """The tree bits of set ``s`` by node number, for tests and the explainer."""
        return {n: (self._bits[s] >> n) & 1 for n in range(1, self._ways)}


class FIFO:
    """Round-robin pointer per set: advances only when a valid way is replaced."""

    def __init__(self, sets: int, ways: int) -> None:
        self._ways = ways
        self._ptr = [0] * sets

    def touch(self, s: int, way: int) -> None:
        pass

    def victim(self, s: int) -> int:
        return self._ptr[s]

    def evict(self, s: int) -> int:
        way = self._ptr[s]
        self._ptr[s] = (way + 1) % self._ways
        return way


class RandomLFSR:
    """One LFSR for the whole array (not per set), stepped once per eviction."""

    def __init__(self, ways: int, seed: int) -> None:
        self._ways = ways
        self.state = seed

    def touch(self, s: int, way: int) -> None:
        pass

    def victim(self, s: int) -> int:
        return lfsr_step(self.state) % self._ways

    def evict(self, s: int) -> int:
        self.state = lfsr_step(self.state)
        return self.state % self._ways


def make_policy(policy: Policy, sets: int, ways: int, lfsr_seed: int):
    """The replacement state of one array of ``sets`` sets of ``ways`` ways."""
    if policy is Policy.LRU:
        return LRU(sets, ways)
    if policy is Policy.PLRU:
        return TreePLRU(sets, ways)
    if policy is Policy.FIFO:
        return FIFO(sets, ways)
    return RandomLFSR(ways, lfsr_seed)
