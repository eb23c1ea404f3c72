"""Quiz: which accesses hit in a small TLB, under LRU, tree-PLRU, FIFO or the LFSR random policy.

The TLB is ``model.reference.ref_tlb.TLB`` itself (the one the scoreboard compares with the
hardware), so the trace shows exactly the replacement decisions of
docs/reference.md "Replacement policies".
"""

from __future__ import annotations

import random
from types import SimpleNamespace

from model.config import Policy, TLBConfig
from model.errors import UserError
from model.reference.ref_tlb import TLB
from model.teach.explain import table
from model.teach.quiz import Knob, Quiz, choice, integer
from model.x86.pte import PageSize

DESCRIPTION = "an access sequence and a small TLB with a replacement policy: which accesses hit"
KNOBS = (
    Knob("entries", "N", "TLB entries (a power of two, 2..64)", integer("entries", 2, 64, power_of_two=True)),
    Knob("ways", "N", "ways per set (a power of two, at most --entries; 1 = direct-mapped)",
         integer("ways", 1, 64, power_of_two=True)),
    Knob("policy", "NAME", "replacement policy: lru, plru, fifo or random",
         choice("policy", {p.value: p for p in Policy})),
    Knob("accesses", "N", "how many accesses the sequence has (1..200)", integer("accesses", 1, 200)),
)
DRAWS = 100  # sequences drawn in search of one that both hits and evicts; the last is kept after that

RULES = {
    Policy.LRU: "LRU: the victim is the least recently used way (hits and fills count as uses).",
    Policy.PLRU: ("tree pseudo-LRU: one bit per tree node (node 1 the root, children 2n and 2n+1, leaves the ways\n"
                  "in order); 0 means the victim side is the left (lower ways).  A hit or fill of way w sets every\n"
                  "node on w's path to point away from w; the victim follows the bits from the root."),
    Policy.FIFO: ("FIFO: a round-robin pointer per set, starting at way 0; a fill that replaces a valid entry\n"
                  "takes the way at the pointer and advances it; hits change nothing."),
    Policy.RANDOM: ("random: a 16-bit Galois LFSR (taps 0xB400) seeded with {seed:#06x}; each time a valid way\n"
                    "must be evicted it steps once (lsb = s & 1; s >>= 1; if lsb: s ^= 0xB400) and the victim\n"
                    "is s mod ways."),
}


def _geometry(rng: random.Random, entries: int | None, ways: int | None, policy: Policy | None) -> TLBConfig:
    drawn = rng.choice((4, 8))
    drawn_ways = rng.choice([w for w in (1, 2, 4, 8) if w <= drawn and not (drawn == 8 and w == 1)])
    drawn_policy = rng.choice(list(Policy))
    entries = entries or drawn
    ways = ways or min(drawn_ways, entries)
    if ways > entries:
        raise UserError(f"--ways {ways}: a TLB of {entries} entries has at most {entries} ways")
    return TLBConfig(entries=entries, ways=ways, policy=policy or drawn_policy, superpage_entries=1)


def _sequence(rng: random.Random, cfg: TLBConfig, accesses: int | None) -> list[int]:
    """Virtual addresses over a few more pages than entries, with some reuse of recent pages."""
    base = rng.randrange(0x400, 0x800)
    pool = rng.sample(range(base, base + 3 * cfg.entries), cfg.entries + rng.randint(1, 3))
    vpns: list[int] = []
    drawn = cfg.entries + rng.randint(6, 9)
    for _ in range(accesses or drawn):
        recent = [v for v in vpns[-4:] if v != vpns[-1]]
        vpns.append(rng.choice(recent) if recent and rng.random() < 0.35 else rng.choice(pool))
    return [vpn << 12 | rng.randrange(0, 4096, 16) for vpn in vpns]


def _policy_state(tlb: TLB, cfg: TLBConfig, s: int, recency: list[int]) -> str:
    policy = tlb.main.policy
    if cfg.policy is Policy.LRU:
        return "LRU->MRU: " + " ".join(f"w{w}" for w in recency) if recency else "-"
    if cfg.policy is Policy.PLRU:
        bits = policy.node_bits(s)
        return "bits " + " ".join(f"n{n}={b}" for n, b in bits.items()) if bits else "-"
    if cfg.policy is Policy.FIFO:
        return f"pointer w{policy.victim(s)}"
    return f"LFSR {policy.state:#06x}"


def _trace(cfg: TLBConfig, lfsr_seed: int, vaddrs: list[int]) -> tuple[list[list[str]], list[int], int]:
    """Run the accesses through ``model.reference.ref_tlb.TLB``: trace rows, the hits (1-based) and the evictions."""
    tlb = TLB(cfg, lfsr_seed)
    walk = SimpleNamespace(size=PageSize.SIZE_4K, writable=True, user=True, nx=False, dirty=True, global_=False)
    recency: list[list[int]] = [[] for _ in range(cfg.sets)]  # ways of each set, least recently used first
    rows, hits, evictions = [], [], 0
    for n, va in enumerate(vaddrs, start=1):
        vpn = va >> 12
        s = vpn & (cfg.sets - 1)
        entry = tlb.lookup(va, 0)
        if entry is not None:
            tlb.touch(entry)
            way, result, action = entry.way, "hit", ""
            hits.append(n)
        else:
            victim = tlb.main.rows[s][tlb.victim(s)]
            walk.frame = vpn << 12
            way = tlb.fill(va, 0, walk).way
            result = "miss"
            action = f"fill w{way}" + (f", evict {victim.tag:#x}" if victim is not None else "")
            evictions += victim is not None
        if way in recency[s]:
            recency[s].remove(way)
        recency[s].append(way)
        ways = " ".join(f"{e.tag:#x}" if e is not None else "-" for e in tlb.main.rows[s])
        rows.append([str(n), f"{va:#010x}", f"{vpn:#x}", str(s), result, action, f"[{ways}]",
                     _policy_state(tlb, cfg, s, recency[s])])
    return rows, hits, evictions


def make(seed: int, *, entries: int | None = None, ways: int | None = None, policy: Policy | None = None,
         accesses: int | None = None) -> Quiz:
    rng = random.Random(seed)
    cfg = _geometry(rng, entries, ways, policy)
    lfsr_seed = rng.randrange(1, 1 << 16)
    for _ in range(DRAWS):  # draw again until the sequence both hits and evicts (still a function of the seed)
        vaddrs = _sequence(rng, cfg, accesses)
        rows, hits, evictions = _trace(cfg, lfsr_seed, vaddrs)
        if hits and evictions >= 2:
            break

    assoc = "direct-mapped" if cfg.ways == 1 else (
        "fully associative" if cfg.ways == cfg.entries else f"{cfg.ways}-way set associative")
    rule = RULES[cfg.policy].format(seed=lfsr_seed) if cfg.ways > 1 else "none needed: one way per set."
    question = (
        f"A TLB with {cfg.entries} entries, {assoc} ({cfg.sets} set{'s' if cfg.sets > 1 else ''} of {cfg.ways} "
        f"way{'s' if cfg.ways > 1 else ''}), 4 KiB pages, starting empty.\n"
        + (f"Set index = VPN mod {cfg.sets} (VPN = vaddr >> 12)." if cfg.sets > 1 else
           "One set: any way can hold any page (VPN = vaddr >> 12).")
        + "  A miss fills the lowest invalid way of its set;\n"
        f"if every way is valid, the replacement policy picks the victim.\nPolicy: {rule}\n\n"
        "Accesses, in order:\n" + table(["#", "vaddr"], [[str(n), f"{va:#010x}"] for n, va in enumerate(vaddrs, 1)])
        + "\nWhich accesses hit in the TLB?\n")
    worked = ("Trace (the set's ways listed w0 first, by VPN):\n"
              + table(["#", "vaddr", "VPN", "set", "result", "action", "set after", "policy state after"], rows))
    pattern = "".join("H" if n in hits else "M" for n in range(1, len(vaddrs) + 1))
    answer = f"Answer: {len(hits)} hit{'s' if len(hits) != 1 else ''}: {', '.join(map(str, hits))} ({pattern})"
    return Quiz(question, worked, answer)
