"""The reference TLB: a set-associative 4 KiB array plus a fully associative superpage array.

Organisation, matching, fill and replacement follow docs/reference.md ("TLB
organisation") exactly, because the scoreboard compares hit/miss with the
hardware request by request.  The main array is indexed by the low bits of
VPN = vaddr[47:12]; 2 MiB and 1 GiB pages live in the superpage array, which has
no index bits at all, so no superpage is ever looked up with the wrong VPN bits.

A lookup must stay cheap (replays run tens of millions of them), so besides the
per-set way arrays a dict maps ``(tag << 2) | size`` to the valid entries with
that tag; a lookup is at most three dict probes and never scans a set.

When several valid entries match one lookup (possible only when page tables
changed without a flush, or the same page is global in one address space and
not in another), the main array wins over the superpage array and the lowest
way wins within an array: the order of a hardware priority encoder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model.config import TLBConfig
from model.reference.ref_replacement import make_policy
from model.x86.pte import PageSize

VPN_MASK = (1 << 36) - 1  # vaddr[47:12]
SIZE_4K = PageSize.SIZE_4K
_2M, _1G = int(PageSize.SIZE_2M), int(PageSize.SIZE_1G)  # plain ints for the index keys


@dataclass(slots=True, eq=False)
class TLBEntry:
    """One TLB entry; ``tag`` is vaddr[47:size.shift].  Permissions are combined over every level."""

    tag: int
    size: PageSize
    pcid: int
    global_: bool
    frame: int
    writable: bool
    user: bool
    nx: bool
    dirty: bool
    set_index: int
    way: int
    valid: bool = True

    def vaddr(self) -> int:
        """The (48-bit, not sign-extended) virtual base address of the page."""
        return self.tag << self.size.shift


class _Array:
    """The ways of one array (main or superpage) and its replacement state."""

    __slots__ = ("rows", "policy")

    def __init__(self, cfg: TLBConfig, sets: int, ways: int, lfsr_seed: int) -> None:
        self.rows: list[list[TLBEntry | None]] = [[None] * ways for _ in range(sets)]
        self.policy = make_policy(cfg.policy, sets, ways, lfsr_seed)

    def victim(self, s: int) -> int:
        row = self.rows[s]
        return row.index(None) if None in row else self.policy.victim(s)

    def choose(self, s: int) -> int:
        row = self.rows[s]
        return row.index(None) if None in row else self.policy.evict(s)


def _best(found: list[TLBEntry], pcid: int) -> TLBEntry | None:
    """The lowest-way entry of ``found`` visible to ``pcid`` (global or same PCID)."""
    best = None
    for e in found:
        if (e.global_ or e.pcid == pcid) and (best is None or e.way < best.way):
            best = e
    return best


class TLB:
    """One TLB (instruction or data) of the reference MMU."""

    def __init__(self, cfg: TLBConfig, lfsr_seed: int) -> None:
        self.cfg = cfg
        self.main = _Array(cfg, cfg.sets, cfg.ways, lfsr_seed)
        self.superpages = _Array(cfg, 1, cfg.superpage_entries, lfsr_seed)
        self._set_mask = cfg.sets - 1
        self._by_tag: dict[int, list[TLBEntry]] = {}

    def lookup(self, vaddr: int, pcid: int) -> TLBEntry | None:
        """The entry that matches ``vaddr`` in address space ``pcid``, or None.  Changes nothing."""
        by_tag = self._by_tag
        vpn = (vaddr >> 12) & VPN_MASK
        found = by_tag.get(vpn << 2)
        if found:
            hit = _best(found, pcid)
            if hit is not None:
                return hit
        huge = by_tag.get((vpn >> 9) << 2 | _2M)
        giant = by_tag.get((vpn >> 18) << 2 | _1G)
        if huge and giant:
            return _best(huge + giant, pcid)
        if huge or giant:
            return _best(huge or giant, pcid)
        return None

    def touch(self, entry: TLBEntry) -> None:
        """A completing hit on ``entry``: update the replacement state."""
        array = self.main if entry.size is SIZE_4K else self.superpages
        array.policy.touch(entry.set_index, entry.way)

    def invalidate(self, entry: TLBEntry) -> None:
        """Clear the valid bit of ``entry``; replacement state is left alone."""
        if entry.valid:
            entry.valid = False
            array = self.main if entry.size is SIZE_4K else self.superpages
            array.rows[entry.set_index][entry.way] = None
            key = entry.tag << 2 | entry.size
            found = self._by_tag[key]
            found.remove(entry)
            if not found:
                del self._by_tag[key]

    def fill(self, vaddr: int, pcid: int, walk) -> TLBEntry:
        """Install the translation of a successful walk (``walk`` has size, frame,
        writable, user, nx, dirty, global_).

        An entry of the same size and tag visible to ``pcid`` is replaced in place;
        otherwise the lowest invalid way, else the policy's victim.
        """
        size = PageSize(walk.size)
        tag = ((vaddr >> 12) & VPN_MASK) >> (size.shift - 12)
        if size is SIZE_4K:
            array, s = self.main, tag & self._set_mask
        else:
            array, s = self.superpages, 0
        key = tag << 2 | size
        old = _best(self._by_tag.get(key, []), pcid)
        if old is not None:
            way = old.way
            self.invalidate(old)
        else:
            way = array.choose(s)
            if array.rows[s][way] is not None:
                self.invalidate(array.rows[s][way])
        entry = TLBEntry(tag, size, pcid, bool(walk.global_), walk.frame, bool(walk.writable), bool(walk.user),
                         bool(walk.nx), bool(walk.dirty), s, way)
        array.rows[s][way] = entry
        self._by_tag.setdefault(key, []).append(entry)
        array.policy.touch(s, way)
        return entry

    def flush_all(self, keep_global: bool = False) -> None:
        for e in self._valid():
            if not (keep_global and e.global_):
                self.invalidate(e)

    def flush_va(self, vaddr: int, pcid: int) -> None:
        """INVLPG: every entry of any size covering ``vaddr`` that is global or of ``pcid``."""
        vpn = (vaddr >> 12) & VPN_MASK
        for key in (vpn << 2, (vpn >> 9) << 2 | _2M, (vpn >> 18) << 2 | _1G):
            for e in list(self._by_tag.get(key, ())):
                if e.global_ or e.pcid == pcid:
                    self.invalidate(e)

    def flush_pcid(self, pcid: int) -> None:
        """The non-global entries of ``pcid``."""
        for e in self._valid():
            if e.pcid == pcid and not e.global_:
                self.invalidate(e)

    def entries(self) -> list[TLBEntry]:
        """Copies of the valid entries, main array first, by set then way."""
        return [dataclasses.replace(e) for e in self._valid()]

    def victim(self, set_index: int = 0, superpage: bool = False) -> int:
        """The way the next fill into this set would take (a preview: nothing changes)."""
        return (self.superpages if superpage else self.main).victim(set_index)

    def _valid(self) -> list[TLBEntry]:
        return [e for array in (self.main, self.superpages) for row in array.rows for e in row if e is not None]
