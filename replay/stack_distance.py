"""LRU stack distances (Mattson, Gecsei, Slutz and Traiger, 1970): every LRU cache size in one pass.

The stack distance of a reference is the number of *distinct* keys referenced
since the previous reference to the same key (0: the key was the last one
used; a first reference has no previous one and is ``COLD``).  Equivalently,
it is the key's depth in the LRU stack, the list of keys from most to least
recently used.  A fully associative true-LRU cache of ``S`` entries holds
exactly the ``S`` most recently used keys (LRU is a *stack algorithm*: the
contents of a size-S cache are always a subset of those of a size-(S+1) cache,
the inclusion property), so a reference hits it exactly when its distance is
``< S``, and one pass gives the hit count of every size at once.

Computing the distances in O(n log n) without a per-reference Python loop:
with ``prev[k]`` the index of the previous reference to key k's key (-1 if
none),

    distance[k] = #{j < k : prev[j] < prev[k]} - (prev[k] + 1).

Every j <= prev[k] has prev[j] < j <= prev[k], so those prev[k] + 1 indices
all count and are subtracted.  For prev[k] < j < k, prev[j] < prev[k] says j
is the first reference to its key after prev[k], so each distinct key in
between counts exactly once (key k's own key does not occur in between).
What is left, counting the earlier elements smaller than each element, is the
query a Fenwick tree over last-use times answers in O(log n) per reference;
here all n queries are answered together, a few numpy passes per bit of the
values (:func:`count_smaller_before`): the same O(n log n) work, done at C
speed instead of in one Python iteration per reference.  Immediate repeats
(distance 0) are removed first, since they change no other distance.
"""

from __future__ import annotations

import numpy as np

COLD = np.iinfo(np.int64).max  # the distance of a first reference: it misses at every size


def previous_use(keys: np.ndarray) -> np.ndarray:
    """``prev[k]``: the index of the previous element equal to ``keys[k]``, or -1."""
    keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    same = keys[order[1:]] == keys[order[:-1]]
    prev = np.full(len(keys), -1, np.int64)
    prev[order[1:][same]] = order[:-1][same]
    return prev


def count_smaller_before(values: np.ndarray) -> np.ndarray:
    """``c[k] = #{j < k : values[j] < values[k]}`` for non-negative integers, in O(n log max).

    All n questions "how many of the first k values are smaller than
    values[k]?" are answered together by walking a wavelet matrix (Claude,
    Navarro and Ordonez, 2015) one bit at a time, from the top.  Level 0 is
    the values in order; each level is the one above partitioned stably by
    that level's bit, zeros first (``Z`` of them).  Question k follows the
    bits of values[k] and keeps the range ``[s, e)`` of the level that holds,
    in their original order, the first k values sharing its bits so far.  Where
    values[k] has a 1, the values of the range with a 0 there are smaller, and
    the range moves to the ones (``Z + rank1``); where it has a 0, to the zeros
    (``rank0``).  Each level is a few O(n) numpy passes.
    """
    x = np.asarray(values, np.int64)
    n = len(x)
    count = np.zeros(n, np.int64)
    if n == 0:
        return count
    if x.min() < 0:
        raise ValueError("count_smaller_before: values must be non-negative")
    level = x.copy()
    position = np.arange(n)
    s, e = np.zeros(n, np.int64), position.copy()  # question k: the first k values
    rank0 = np.zeros(n + 1, np.int64)  # rank0[i]: zeros of this level's bit at positions < i
    for b in range(int(x.max()).bit_length() - 1, -1, -1):
        one = ((level >> b) & 1).astype(bool)
        np.cumsum(~one, out=rank0[1:])
        zeros = rank0[n]
        bit = ((x >> b) & 1).astype(bool)
        zs, ze = rank0[s], rank0[e]
        count += (ze - zs) * bit
        s = np.where(bit, zeros + s - zs, zs)
        e = np.where(bit, zeros + e - ze, ze)
        level[np.where(one, zeros + position - rank0[:-1], rank0[:-1])] = level.copy()
    return count


def stack_distances(keys: np.ndarray) -> np.ndarray:
    """The LRU stack distance of every reference (module docstring); ``COLD`` for first references."""
    keys = np.asarray(keys)
    n = len(keys)
    dist = np.zeros(n, np.int64)
    if n == 0:
        return dist
    head = np.ones(n, bool)  # not an immediate repeat of the reference before it
    head[1:] = keys[1:] != keys[:-1]
    heads = np.flatnonzero(head)
    prev = previous_use(keys[heads])
    d = count_smaller_before(prev + 1) - (prev + 1)
    d[prev < 0] = COLD
    dist[heads] = d
    return dist


def lru_hits(distances: np.ndarray, sizes) -> np.ndarray:
    """Hits of a fully associative LRU cache of each of ``sizes`` entries: references with distance < size."""
    warm = np.sort(distances[distances != COLD])
    return np.searchsorted(warm, np.asarray(sizes, np.int64), side="left")
