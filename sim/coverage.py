"""Functional coverage of the translate port: which kinds of answer the regression has produced.

Every response the scoreboard checks falls in one bin of six dimensions:

=========  ===================================================================================
size       the page size of the leaf the walk or the TLB entry gave: 4K, 2M, 1G; ``-`` when
           there is none (the walk stopped at a non-present or malformed entry; non-canonical)
access     read, write, fetch
mode       user, supervisor
lookup     hit, miss; ``none`` for a non-canonical address (answered before the TLB)
fault      ok, not_present, protection, reserved, noncanonical (``scoreboard.fault_class``)
level      the walk level where it faulted: PML4, PDPT, PD, PT; ``-`` when nothing faulted.
           A protection fault is found after the leaf, so its level is the leaf's.
=========  ===================================================================================

Of the 4 x 3 x 2 x 3 x 5 x 5 = 1800 combinations most cannot occur by construction
(``EXCLUSIONS``: each rule names the contract that rules its bins out); the rest,
``reachable_bins()``, are what a complete regression hits.  ``bin_key`` is called by
the scoreboard for every response; the counts travel in each test's result record
and ``mmu sim`` aggregates them across tests (``report``).
"""

from __future__ import annotations

import itertools
from collections import Counter

from model.x86.pte import Level, PageSize

SIZES = ("4K", "2M", "1G", "-")
ACCESSES = ("read", "write", "fetch")
MODES = ("user", "supervisor")
LOOKUPS = ("hit", "miss", "none")
FAULTS = ("ok", "not_present", "protection", "reserved", "noncanonical")
LEVELS = ("-", "PML4", "PDPT", "PD", "PT")
DIMENSIONS = ("size", "access", "mode", "lookup", "fault", "level")

_LEAF_LEVEL = {"4K": "PT", "2M": "PD", "1G": "PDPT"}
_SIZE_OF_LEAF = {Level.PT: "4K", Level.PD: "2M", Level.PDPT: "1G"}

# (reason, predicate over a bin as a dict of its dimensions); the first rule that matches excludes a bin.
EXCLUSIONS = (
    ("a TLB hit never faults: a match that cannot complete is invalidated and walks (docs/reference.md, "
     "Lookup outcome)", lambda b: b["lookup"] == "hit" and b["fault"] != "ok"),
    ("a non-canonical address is answered before the TLB: no lookup, no walk, no level, no page size",
     lambda b: b["fault"] == "noncanonical" and (b["lookup"], b["size"], b["level"]) != ("none", "-", "-")),
    ("only a non-canonical address skips the TLB lookup",
     lambda b: b["lookup"] == "none" and b["fault"] != "noncanonical"),
    ("a translation always has a page size and nothing faulted",
     lambda b: b["fault"] == "ok" and (b["size"] == "-" or b["level"] != "-")),
    ("a not-present or reserved-bit fault stops the walk at an entry (a level) before a valid leaf (no size)",
     lambda b: b["fault"] in ("not_present", "reserved") and (b["size"] != "-" or b["level"] == "-")),
    ("a protection fault is found after a valid leaf: its level is the leaf's (4K: PT, 2M: PD, 1G: PDPT)",
     lambda b: b["fault"] == "protection" and (b["size"] == "-" or b["level"] != _LEAF_LEVEL[b["size"]])),
)


def all_bins():
    for values in itertools.product(SIZES, ACCESSES, MODES, LOOKUPS, FAULTS, LEVELS):
        yield dict(zip(DIMENSIONS, values))


def key(b: dict) -> str:
    return " ".join(b[d] for d in DIMENSIONS)


def exclusion(b: dict) -> str | None:
    """Why bin ``b`` cannot occur, or None when it can."""
    for reason, rule in EXCLUSIONS:
        if rule(b):
            return reason
    return None


def reachable_bins() -> list[str]:
    return [key(b) for b in all_bins() if exclusion(b) is None]


def bin_key(fault_cls: str, access: str, user: bool, tlb_hit: bool, size: int, walk) -> str:
    """The bin of one checked response; ``walk`` is the reference's walk (None for a hit or non-canonical)."""
    level = "-"
    sz = "-"
    if fault_cls == "ok":
        sz = PageSize(size).label
    elif fault_cls != "noncanonical":
        last = walk.reads[-1][0]  # the entry the walk stopped at (protection: the leaf)
        level = last.name
        if fault_cls == "protection":
            sz = _SIZE_OF_LEAF[last]
    lookup = "none" if fault_cls == "noncanonical" else ("hit" if tlb_hit else "miss")
    return " ".join((sz, access, "user" if user else "supervisor", lookup, fault_cls, level))


def report(counts: Counter) -> str:
    """The coverage summary: bins hit of the reachable ones, the exclusions, and every bin never hit."""
    reachable = reachable_bins()
    excluded = Counter(exclusion(b) for b in all_bins())
    excluded.pop(None, None)
    impossible_hits = sorted(k for k in counts if k not in set(reachable))
    missed = [k for k in reachable if not counts.get(k)]
    hit = len(reachable) - len(missed)
    total = len(reachable) + sum(excluded.values())
    lines = [f"functional coverage ({' x '.join(DIMENSIONS)}; {total} bins): {hit} of {len(reachable)} reachable "
             f"bins hit ({100.0 * hit / len(reachable):.1f} %), {sum(counts.values())} responses binned"]
    lines.append(f"  excluded as impossible by construction ({sum(excluded.values())} bins):")
    for reason, _ in EXCLUSIONS:
        lines.append(f"    {excluded[reason]:>5}  {reason}")
    if impossible_hits:  # the scoreboard would have failed first; shown so that it cannot go unnoticed
        lines.append(f"  IMPOSSIBLE bins that were hit ({len(impossible_hits)}): " + "; ".join(impossible_hits))
    if missed:
        lines.append(f"  bins never hit ({len(missed)}), as '{' '.join(DIMENSIONS)}':")
        lines.extend(f"    {k}" for k in missed)
    else:
        lines.append("  every reachable bin was hit")
    return "\n".join(lines)
