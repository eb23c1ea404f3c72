"""A content-addressable array: the one place that matches, fills and flushes entries.

Every associative structure of the MMU is one :class:`CAM`: each TLB's main
array (all its sets), each TLB's superpage array and the page-walk cache.  What
differs between them is only *what* an entry is and *when* it matches, so those
are parameters (layouts and predicates); how a way is chosen, touched,
filled and invalidated is written once, here.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth import Array, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.replacement import Replacement, priority_encode
from model.config import Policy


class CAM(wiring.Component):
    """``sets`` x ``ways`` entries of the layout ``entry`` in flip-flops, each with a valid bit, and the
    replacement state of every set (:class:`hw.replacement.Replacement` under ``policy``).

    Predicates (Python functions that build the logic, called once per entry):

    - ``match(entry, key, way)``: the entry answers a lookup for ``key`` (a view of
      the ``key`` layout); the CAM ANDs in the valid bit.
    - ``doomed(entry, which, set, way)``: a flush selected by ``which`` (a view of
      ``flush_key``) drops the entry.
    - ``same(entry, new)`` (optional): a valid entry already holding what the fill
      ``new`` brings; it is replaced in place.
    - ``prefer(match, entries)`` (optional): narrows the match vector of a lookup
      to the entries that may answer (default: all of them); the lowest way of
      what remains wins.

    Ports (all ``In`` unless marked ``out``; combinational unless said):

    ``lookup.set`` [log2 sets], ``lookup.key`` [key]
        the set and key compared.  ``lookup.match`` (out) [ways]: valid matching
        ways; ``lookup.hit`` (out): some way may answer; ``lookup.way`` (out): the
        lowest of them; ``lookup.entry`` (out): that way's entry.
    ``lookup.touch``, ``lookup.drop``
        at the end of the cycle: ``touch`` makes ``lookup.way`` the most recently
        used of its set; ``drop`` clears its valid bit.
    ``fill.en``, ``fill.set``, ``fill.entry`` [entry], ``fill.inplace`` [ways]
        at the end of a cycle with ``en``: write ``entry`` into ``fill.way`` (out)
        and set its valid bit.  The way is the lowest of ``inplace`` (ways the owner
        found holding this entry) and of the valid ways ``same`` picks, else the
        lowest invalid way, else the policy's victim (the FIFO pointer advances,
        the LFSR steps).  The filled way is touched.  A fill wins over a lookup's
        touch or drop of the same cycle.
    ``flush.en``, ``flush.which`` [flush_key]
        at the end of a cycle with ``en``: clear the valid bit of every entry
        ``doomed`` picks (a fill of the same cycle wins for its own way).
    """

    def __init__(self, *, entry: data.Layout, key: data.Layout, flush_key: data.Layout, ways: int, sets: int = 1,
                 policy: Policy = Policy.LRU, seed: int = 0xACE1,
                 match: Callable, doomed: Callable, same: Callable | None = None, prefer: Callable | None = None):
        self.entry_layout, self.sets, self.ways = entry, sets, ways
        self.policy, self.seed = policy, seed
        self._match, self._doomed, self._same, self._prefer = match, doomed, same, prefer
        super().__init__({
            "lookup": In(wiring.Signature({
                "set": Out(range(sets)), "key": Out(key), "touch": Out(1), "drop": Out(1),
                "match": In(ways), "hit": In(1), "way": In(range(ways)), "entry": In(entry),
            })),
            "fill": In(wiring.Signature({
                "en": Out(1), "set": Out(range(sets)), "entry": Out(entry), "inplace": Out(ways),
                "way": In(range(ways)),
            })),
            "flush": In(wiring.Signature({"en": Out(1), "which": Out(flush_key)})),
        })

    def elaborate(self, platform):
        m = Module()
        S, W = self.sets, self.ways
        lookup, fill, flush = self.lookup, self.fill, self.flush
        m.submodules.repl = repl = Replacement(self.policy, S, W, self.seed)

        valid = [Signal(W, name=f"valid_s{s}") for s in range(S)]
        rows = [Signal(data.ArrayLayout(self.entry_layout, W), name=f"entries_s{s}") for s in range(S)]

        def of_set(signals, index):
            return Array(signals)[index] if S > 1 else signals[0]

        # ---- lookup -------------------------------------------------------------------------
        cur_valid = Signal(W, name="lookup_valid")
        cur = Signal(data.ArrayLayout(self.entry_layout, W), name="lookup_entries")
        m.d.comb += [cur_valid.eq(of_set(valid, lookup.set)), cur.eq(of_set(rows, lookup.set))]
        for w in range(W):
            m.d.comb += lookup.match[w].eq(cur_valid[w] & self._match(cur[w], lookup.key, w))
        eligible = Signal(W, name="lookup_eligible")
        m.d.comb += eligible.eq(self._prefer(lookup.match, cur) if self._prefer else lookup.match)
        way = priority_encode(m, eligible, W, "lookup_way")
        m.d.comb += [lookup.way.eq(way), lookup.hit.eq(eligible.any()),
                     lookup.entry.eq(Array(cur[w] for w in range(W))[way])]

        # ---- fill: in place, else the lowest invalid way, else the victim ----------------------
        fill_valid = Signal(W, name="fill_set_valid")
        m.d.comb += fill_valid.eq(of_set(valid, fill.set))
        inplace = Signal(W, name="fill_inplace")
        if self._same is None:
            m.d.comb += inplace.eq(fill.inplace)
        else:
            fill_row = of_set(rows, fill.set)
            same = Signal(W, name="fill_same")
            for w in range(W):
                m.d.comb += same[w].eq(fill_valid[w] & self._same(fill_row[w], fill.entry))
            m.d.comb += inplace.eq(fill.inplace | same)
        invalid = Signal(W, name="fill_invalid")
        m.d.comb += invalid.eq(~fill_valid)
        inplace_way = priority_encode(m, inplace, W, "fill_inplace_way")
        invalid_way = priority_encode(m, invalid, W, "fill_invalid_way")
        m.d.comb += fill.way.eq(Mux(inplace.any(), inplace_way, Mux(invalid.any(), invalid_way, repl.victim)))

        # ---- replacement: a fill, else a lookup's touch --------------------------------------
        with m.If(fill.en):
            m.d.comb += [repl.set.eq(fill.set), repl.touch.eq(1), repl.way.eq(fill.way),
                         repl.advance.eq(~inplace.any() & ~invalid.any())]
        with m.Elif(lookup.touch):
            m.d.comb += [repl.set.eq(lookup.set), repl.touch.eq(1), repl.way.eq(way)]

        # ---- entries and valid bits: a fill sets, a flush or a drop clears ---------------------
        for s in range(S):
            for w in range(W):
                filled = fill.en & (fill.set == s) & (fill.way == w)
                dropped = ((flush.en & self._doomed(rows[s][w], flush.which, s, w))
                           | (lookup.drop & (lookup.set == s) & (way == w)))
                with m.If(filled):
                    m.d.sync += [valid[s][w].eq(1), rows[s][w].eq(fill.entry)]
                with m.Elif(dropped):
                    m.d.sync += valid[s][w].eq(0)
        return m

