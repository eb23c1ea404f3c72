"""One translation explained step by step, like the four-level paging figure of an OS textbook.

``explain`` runs the translation through the reference MMU (model/reference/ref_mmu.py)
twice, on an overlay of the caller's memory, and keeps everything a student
needs to follow it: the address split, each entry read (address = table base
+ 8 * index, value decoded bit by bit), where the answer came from (TLB, page
walk cache, DRAM), each permission rule with its inputs, the fault and its
error code, and the A/D writes.  The render functions are also the worked
answer of ``mmu quiz translate``, so the two never explain the walk differently.

The permission rules are spelled out one by one here (docs/reference.md, walk
step 4) rather than taken from ``walker.access_allowed``; ``render_checks``
states which rule failed, and tests check that the rules agree with the walker
on every combination.

With no workload, ``demo_address_space`` builds a small address space (the
table ``DEMO_MAPPINGS``) so the command works out of the box.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.config import MMUConfig
from model.errors import UserError
from model.mm.page_alloc import BuddyAllocator
from model.reference.ref_mmu import RefMMU, Response
from model.reference.ref_pwc import PWCEntry
from model.reference.ref_tlb import TLBEntry
from model.reference.ref_walker import ControlRegs, WalkResult, walk
from model.x86.pgtable import PageTables
from model.x86.physmem import PhysMem
from model.x86.pte import (
    PCD,
    PF_ID,
    PF_P,
    PF_RSVD,
    PF_US,
    PF_WR,
    PS,
    PWT,
    RW,
    US,
    XD,
    A,
    Access,
    D,
    FaultKind,
    G,
    Level,
    P,
    PageSize,
    addr_mask,
    is_canonical,
    reserved_mask,
)

ACCESS_LETTERS = {"r": Access.READ, "w": Access.WRITE, "x": Access.FETCH}
ACCESS_WORDS = {Access.READ: "read", Access.WRITE: "write", Access.FETCH: "instruction fetch"}
ENTRY_NAMES = {Level.PML4: "PML4E", Level.PDPT: "PDPTE", Level.PD: "PDE", Level.PT: "PTE"}
NEXT_TABLE = {Level.PML4: "PDPT", Level.PDPT: "PD", Level.PD: "PT"}
_LEVELS = (Level.PML4, Level.PDPT, Level.PD, Level.PT)
_LEAF_SIZE = {Level.PT: PageSize.SIZE_4K, Level.PD: PageSize.SIZE_2M, Level.PDPT: PageSize.SIZE_1G}
_SIZE_WORDS = {PageSize.SIZE_4K: "4 KiB", PageSize.SIZE_2M: "2 MiB", PageSize.SIZE_1G: "1 GiB"}
_LEAF_NAME = {PageSize.SIZE_2M: "PDE (PS=1)", PageSize.SIZE_1G: "PDPTE (PS=1)"}


# --- parsing user input ------------------------------------------------------------

def parse_vaddr(text: str) -> int:
    """A virtual address as typed: decimal or 0x-hex, 0 .. 2**64-1 (non-canonical ones are explained)."""
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise UserError(f"address {text!r}: expected a number like 0x7f1234567abc") from None
    if not 0 <= value < 1 << 64:
        raise UserError(f"address {text!r}: must be a 64-bit unsigned value (0 .. 0xffffffffffffffff)")
    return value


def parse_access(text: str) -> Access:
    try:
        return ACCESS_LETTERS[text]
    except KeyError:
        raise UserError(f"access {text!r}: one of r (read), w (write), x (instruction fetch)") from None


# --- formatting helpers ---------------------------------------------------------------

def table(headers: list[str], rows: list[list[str]], indent: int = 2, right: frozenset[int] = frozenset()) -> str:
    """Rows in aligned columns under a header line; column numbers in ``right`` are right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]

    def line(cells):
        out = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return " " * indent + "  ".join(out).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows]) + "\n"


def paddr_str(addr: int, maxphyaddr: int) -> str:
    return f"{addr:#0{2 + (maxphyaddr + 3) // 4}x}"


def vaddr_str(addr: int) -> str:
    return f"{addr:#018x}"


def access_phrase(access: Access, user: bool) -> str:
    return f"{'user' if user else 'supervisor'} {ACCESS_WORDS[access]}"


def flags_line(ctrl: ControlRegs) -> str:
    return (f"CR3 = {ctrl.cr3:#x}   CR0.WP={int(ctrl.wp)}  EFER.NXE={int(ctrl.nxe)}  CR4.SMEP={int(ctrl.smep)}  "
            f"CR4.SMAP={int(ctrl.smap)}  CR4.PCIDE={int(ctrl.pcide)}")


def _bits(value: int, positions) -> str:
    return ",".join(str(b) for b in positions if value >> b & 1)


# --- the address split ------------------------------------------------------------------

def render_split(vaddr: int, size: PageSize = PageSize.SIZE_4K) -> str:
    """The virtual address cut as a page of ``size`` uses it (SDM figures 4-8 to 4-10): the sign extension,
    the table indices down to the leaf's level, and the offset into the page (12, 21 or 30 bits)."""
    top = vaddr >> 48
    bit47 = vaddr >> 47 & 1
    canon = "canonical" if is_canonical(vaddr) else "NOT canonical"
    rows = [["63:48", "sign extension", f"{top:016b}", f"{top:#06x}", f"must all equal bit 47 ({bit47}): {canon}"]]
    for level, name in zip(_LEVELS, ("PML4", "PDPT", "PD", "PT")):
        if level.shift < size.shift:
            break
        index = level.index(vaddr)
        rows.append([f"{level.shift + 8}:{level.shift}", f"{name} index", f"{index:09b}", f"{index:#05x}", str(index)])
    offset = vaddr & (size.bytes - 1)
    width = size.shift
    rows.append([f"{width - 1}:0", "page offset", f"{offset:0{width}b}", f"{offset:#0{2 + (width + 3) // 4}x}",
                 str(offset)])
    title = f"Virtual address {vaddr_str(vaddr)}"
    if size != PageSize.SIZE_4K:
        title += f", as the {_SIZE_WORDS[size]} page it falls in splits it (the walk ends at the {_LEAF_NAME[size]})"
    return title + "\n" + table(["bits", "field", "binary", "hex", "decimal"], rows)


# --- one entry, bit by bit ----------------------------------------------------------------

def is_leaf(level: Level, value: int) -> bool:
    return level == Level.PT or (level != Level.PML4 and bool(value & PS))


def entry_meaning(level: Level, value: int, maxphyaddr: int, nxe: bool) -> str:
    """What the walker does with this entry, in a few words."""
    if not value & P:
        return "P=0: not present -> #PF"
    leaf = is_leaf(level, value)
    rsvd = value & reserved_mask(level, leaf, maxphyaddr, nxe)
    if rsvd:
        return f"reserved bit {_bits(rsvd, range(64))} set -> #PF (RSVD)"
    addr = value & addr_mask(maxphyaddr)
    if not leaf:
        return f"next: {NEXT_TABLE[level]} at {paddr_str(addr, maxphyaddr)}"
    size = _LEAF_SIZE[level]
    frame = addr & ~(size.bytes - 1)
    ps = "" if level == Level.PT else "PS=1: "
    return f"{ps}{_SIZE_WORDS[size]} page at {paddr_str(frame, maxphyaddr)}"


def decode_row(level: Level, value: int, maxphyaddr: int, nxe: bool) -> list[str]:
    """One row of the bit table; '.' marks a bit this level ignores (G, D outside a leaf; PAT in a PTE)."""
    leaf = is_leaf(level, value)
    rsvd = value & reserved_mask(level, leaf, maxphyaddr, nxe) if value & P else 0

    def bit(mask: int) -> str:
        return str(int(bool(value & mask)))

    return [
        ENTRY_NAMES[level], f"{value:#018x}", bit(XD), _bits(rsvd, range(64)) or "0",
        paddr_str(value & addr_mask(maxphyaddr), maxphyaddr),
        bit(G) if leaf else ".", bit(PS) if level != Level.PT else ".", bit(D) if leaf else ".",
        bit(A), bit(PCD), bit(PWT), bit(US), bit(RW), bit(P),
    ]


def render_bits(reads: list[tuple[Level, int, int]], maxphyaddr: int, nxe: bool) -> str:
    headers = ["entry", "value", "XD", "rsvd", f"addr[{maxphyaddr - 1}:12]", "G", "PS", "D", "A", "PCD", "PWT",
               "U/S", "R/W", "P"]
    rows = [decode_row(level, value, maxphyaddr, nxe) for level, _, value in reads]
    return ("Entries bit by bit (bit 63 XD, 8 G, 7 PS, 6 D, 5 A, 4 PCD, 3 PWT, 2 U/S, 1 R/W, 0 P; "
            "'.' = ignored here):\n" + table(headers, rows))


# --- the walk ----------------------------------------------------------------------------------

def render_walk(result: WalkResult, cr3: int, maxphyaddr: int, nxe: bool, pwc: PWCEntry | None = None) -> str:
    """Each entry read: table base + 8 * index = entry address, its value and meaning; then its bits."""
    out = []
    if pwc is not None:
        names = [ENTRY_NAMES[lv] for lv in _LEVELS if lv >= pwc.level]
        skipped = " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))
        out.append(f"Page-walk cache hit: its {ENTRY_NAMES[pwc.level]} for vaddr[47:{pwc.level.shift}] = "
                   f"{pwc.prefix:#x} gives the {NEXT_TABLE[pwc.level]} at {paddr_str(pwc.table, maxphyaddr)}\n"
                   f"and the rights so far (R/W={int(pwc.writable)} U/S={int(pwc.user)} XD={int(pwc.nx)}): "
                   f"the {skipped} {'is' if pwc.level == Level.PML4 else 'are'} not read.\n")
    else:
        out.append(f"The PML4 base is CR3[{maxphyaddr - 1}:12] = {paddr_str(cr3 & addr_mask(maxphyaddr), maxphyaddr)}."
                   "\n")
    rows = []
    for level, addr, value in result.reads:
        index = (addr & 0xFFF) >> 3
        rows.append([level.name, paddr_str(addr - 8 * index, maxphyaddr), f"+ 8 * {index:3d}",
                     f"= {paddr_str(addr, maxphyaddr)}", f"{value:#018x}",
                     entry_meaning(level, value, maxphyaddr, nxe)])
    out.append(table(["level", "table base", "+ 8 * index", "= entry address", "value read", "meaning"], rows))
    out.append(render_bits(result.reads, maxphyaddr, nxe))
    return "".join(out)


# --- the permission rules ------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    rule: str
    inputs: str
    outcome: str  # "pass", "FAIL", "n/a", "not reached"

    @property
    def failed(self) -> bool:
        return self.outcome == "FAIL"


def _per_level(result: WalkResult, mask: int, pwc: PWCEntry | None, cached: bool | None) -> str:
    """``U/S: 1 1 0 1``: the bit at each level used, the page-walk cache's combined value first."""
    parts = [f"cache {int(cached)}"] if pwc is not None else []
    parts += [str(int(bool(v & mask))) for _, _, v in result.reads]
    return " ".join(parts)


def permission_checks(result: WalkResult, access: Access, user: bool, ctrl: ControlRegs, maxphyaddr: int,
                      pwc: PWCEntry | None = None) -> list[Check]:
    """Every rule of docs/reference.md "The walk" (steps 3 and 4), with its inputs and outcome."""
    reads = result.reads
    last_level, _, last = reads[-1]
    present = bool(last & P)
    rsvd = last & reserved_mask(last_level, is_leaf(last_level, last), maxphyaddr, ctrl.nxe) if present else 0
    reached = present and not rsvd  # the walk got to a leaf: the rights are checked
    rsvd_inputs = f"{ENTRY_NAMES[last_level]}: bit {_bits(rsvd, range(64))}" if rsvd else "none set"
    checks = [
        Check("P=1 in every entry read", f"P: {_per_level(result, P, None, None)}", "pass" if present else "FAIL"),
        Check("no reserved bit set", rsvd_inputs, "not reached" if not present else ("FAIL" if rsvd else "pass")),
    ]
    w, u, x = result.writable, result.user, result.nx  # combined over every level used
    us_in = f"U/S: {_per_level(result, US, pwc, pwc and pwc.user)}"
    rw_in = f"R/W: {_per_level(result, RW, pwc, pwc and pwc.writable)}"
    xd_in = f"XD: {_per_level(result, XD, pwc, pwc and pwc.nx)}"

    def rule(name: str, applies: bool, why_not: str, inputs: str, ok: bool) -> Check:
        if not reached:
            return Check(name, inputs if applies else why_not, "not reached")
        if not applies:
            return Check(name, why_not, "n/a")
        return Check(name, inputs, "pass" if ok else "FAIL")

    fetch, write = access == Access.FETCH, access == Access.WRITE
    checks += [
        rule("U/S: a user access needs U/S=1 at every level", user, "supervisor access", us_in, u),
        rule("R/W: a write needs R/W=1 at every level" + ("" if user else " (CR0.WP=1)"),
             write and (user or ctrl.wp), "not a write" if not write else "supervisor write with CR0.WP=0",
             rw_in, w),
        rule("NX: a fetch needs XD=0 at every level (EFER.NXE=1)", fetch and ctrl.nxe,
             "not a fetch" if not fetch else "EFER.NXE=0", xd_in, not x),
        rule("SMEP: no supervisor fetch from a user page", fetch and not user and ctrl.smep,
             "not a supervisor fetch" if not (fetch and not user) else "CR4.SMEP=0", f"user page: {int(u)}", not u),
        rule("SMAP: no supervisor data access to a user page", not fetch and not user and ctrl.smap,
             "not a supervisor data access" if fetch or user else "CR4.SMAP=0", f"user page: {int(u)}", not u),
    ]
    return checks


def render_checks(checks: list[Check]) -> str:
    rows = [[c.rule, c.inputs, c.outcome] for c in checks]
    return "Checks, in the walker's order:\n" + table(["rule", "inputs", "outcome"], rows)


# --- the outcome ----------------------------------------------------------------------------------

ERROR_CODE_BITS = (
    (4, "I/D", PF_ID, "instruction fetch (with NXE or SMEP on)", "not an instruction fetch (or NXE=SMEP=0)"),
    (3, "RSVD", PF_RSVD, "a reserved bit was set in an entry", "no reserved bit set"),
    (2, "U/S", PF_US, "user-mode access", "supervisor-mode access"),
    (1, "W/R", PF_WR, "the access was a write", "the access was a read or fetch"),
    (0, "P", PF_P, "protection violation (the page was present)", "the page was not present"),
)


def render_error_code(code: int, culprit: str = "") -> str:
    """The error code bit by bit; ``culprit`` names the entry whose P=0 or reserved bit caused it."""
    rows = [[str(bit), name, str(int(bool(code & mask))), yes if code & mask else no]
            for bit, name, mask, yes, no in ERROR_CODE_BITS]
    if culprit and not code & (PF_P | PF_RSVD):
        rows[-1][-1] += f" ({culprit}.P=0)"
    elif culprit and code & PF_RSVD:
        rows[1][-1] += f" (in the {culprit})"
    return (f"Page fault (#PF), error code {code:#04x} = {code:05b}b:\n"
            + table(["bit", "name", "value", "meaning"], rows))


def render_result(result: WalkResult, vaddr: int, maxphyaddr: int) -> str:
    if result.fault == FaultKind.NONCANONICAL:
        return ("Result: #GP (general protection), not #PF: bits 63:47 are not all equal, so the address is "
                "never looked up or walked.\n")
    if result.fault == FaultKind.PAGE:
        return "Result: " + render_error_code(result.error_code, ENTRY_NAMES[result.reads[-1][0]])
    size = result.size
    offset = vaddr & (size.bytes - 1)
    return (f"Result: {_SIZE_WORDS[size]} page: physical address = frame {paddr_str(result.frame, maxphyaddr)} "
            f"+ offset {offset:#x} (vaddr[{size.shift - 1}:0]) = {paddr_str(result.paddr, maxphyaddr)}\n")


def render_ad(result: WalkResult, maxphyaddr: int) -> str:
    if result.fault == FaultKind.NONCANONICAL:
        return "A/D writes: none (no walk).\n"
    if result.fault != FaultKind.NONE:
        return "A/D writes: none (a walk that faults writes nothing).\n"
    if not result.writes:
        return "A/D writes: none (every entry already had A set, and D where this access needs it).\n"
    level_at = {addr: level for level, addr, _ in result.reads}
    old_at = {addr: value for _, addr, value in result.reads}
    rows = []
    for addr, new in result.writes:
        set_bits = " and ".join(n for n, m in (("A", A), ("D", D)) if new & m and not old_at[addr] & m)
        rows.append([ENTRY_NAMES[level_at[addr]], paddr_str(addr, maxphyaddr), f"{old_at[addr]:#018x}",
                     f"-> {new:#018x}", f"sets {set_bits}"])
    return "A/D writes (each a 64-bit write of the whole entry, top-down):\n" + table(
        ["entry", "address", "old value", "new value", ""], rows)


def render_translation(result: WalkResult, vaddr: int, access: Access, user: bool, ctrl: ControlRegs,
                       maxphyaddr: int, pwc: PWCEntry | None = None) -> str:
    """The textbook walk: split, entries, checks, result, A/D writes (also the quiz's worked answer)."""
    leaf = result.size if result.fault == FaultKind.NONE else PageSize.SIZE_4K
    parts = [render_split(vaddr, leaf)]
    if result.fault != FaultKind.NONCANONICAL:
        parts += [render_walk(result, ctrl.cr3, maxphyaddr, ctrl.nxe, pwc),
                  render_checks(permission_checks(result, access, user, ctrl, maxphyaddr, pwc))]
    parts += [render_result(result, vaddr, maxphyaddr), render_ad(result, maxphyaddr)]
    return "\n".join(parts)


# --- two translations through the reference MMU ---------------------------------------------------

class OverlayMem:
    """Reads fall through to ``base`` unless written here; writes stay here, so ``base`` is never changed."""

    def __init__(self, base) -> None:
        self.base, self.words = base, {}

    def read64(self, addr: int) -> int:
        value = self.words.get(addr)
        return self.base.read64(addr) if value is None else value

    def write64(self, addr: int, value: int) -> None:
        self.words[addr] = value


@dataclass
class Traced:
    """One translation by the reference MMU and the cache entries that decided it."""

    response: Response
    walk: WalkResult  # the walk made, or the one a TLB hit saved (no reads for a non-canonical address)
    tlb_name: str  # ITLB or DTLB
    tlb_entry: TLBEntry | None  # the entry that answered (a hit)
    pwc_entry: PWCEntry | None  # the entry a walk started from

    def source(self) -> str:
        r, e = self.response, self.tlb_entry
        if r.fault == FaultKind.NONCANONICAL:
            return "no lookup (non-canonical)"
        if r.tlb_hit:
            where = f"set {e.set_index}" if e.size == PageSize.SIZE_4K else "superpage array"
            return f"{self.tlb_name} hit ({where}, way {e.way})"
        where = f"PWC hit at {ENTRY_NAMES[self.pwc_entry.level]}" if self.pwc_entry else "PWC miss"
        return f"walk ({self.tlb_name} miss, {where})"


def _pwc_match(ref: RefMMU, vaddr: int) -> PWCEntry | None:
    """The entry the page-walk cache will hand the walk: the deepest one matching, as PageWalkCache.lookup."""
    pcid, va = ref.ctrl.pcid, vaddr & ((1 << 48) - 1)
    found = [e for e in ref.pwc.entries() if e.pcid == pcid and e.prefix == va >> e.level.shift]
    return min(found, key=lambda e: e.level, default=None)


def trace(ref: RefMMU, vaddr: int, access: Access, user: bool) -> Traced:
    """Translate once, remembering which TLB entry or page-walk-cache entry was used."""
    name, tlb = ("ITLB", ref.itlb) if access == Access.FETCH else ("DTLB", ref.dtlb)
    hit_before = tlb.lookup(vaddr, ref.ctrl.pcid)
    pwc = _pwc_match(ref, vaddr)
    r = ref.translate(vaddr, access, user)
    if r.walk is not None:
        return Traced(r, r.walk, name, None, pwc if r.pwc_hit else None)
    # a TLB hit, or a non-canonical address: show the walk the tables would give (nothing is written)
    saved = walk(ref.mem, ref.ctrl, vaddr, access, user, maxphyaddr=ref.cfg.maxphyaddr, apply=False)
    return Traced(r, saved, name, hit_before if r.tlb_hit else None, None)


@dataclass
class Explanation:
    vaddr: int
    access: Access
    user: bool
    ctrl: ControlRegs
    cfg: MMUConfig
    warmup: list[int]  # translated first (same access), to fill the TLB and PWC
    first: Traced
    second: Traced
    hw: list | None = None  # sim.pysim.HWTranslation per request (warm-up ones first), or None

    def requests(self) -> list[tuple[int, Access, bool]]:
        """Every translation made, in order, for the hardware to repeat: the warm-up ones, then the two."""
        return [(va, self.access, self.user) for va in self.warmup] + [(self.vaddr, self.access, self.user)] * 2

    def mismatches(self) -> list[str]:
        """Where the hardware's answers differ from the reference MMU's (a bug in one of them)."""
        if self.hw is None:
            return []
        out = []
        for label, t, h in (("1st", self.first, self.hw[-2]), ("2nd", self.second, self.hw[-1])):
            r = t.response
            want = (r.paddr, r.fault, r.error_code, r.size, r.tlb_hit)
            got = (h.paddr, h.fault, h.error_code, h.size, h.tlb_hit)
            if want != got:
                out.append(f"{label} translation: hardware answered paddr={h.paddr:#x} fault={h.fault.name} "
                           f"error_code={h.error_code:#x} size={h.size.label} tlb_hit={int(h.tlb_hit)}; the model "
                           f"says paddr={r.paddr:#x} fault={r.fault.name} error_code={r.error_code:#x} "
                           f"size={r.size.label} tlb_hit={int(r.tlb_hit)}")
            elif r.walk is not None and (h.reads, h.writes) != ([a for _, a, _ in r.walk.reads], r.walk.writes):
                out.append(f"{label} translation: the hardware read {[hex(a) for a in h.reads]} and wrote "
                           f"{[(hex(a), hex(v)) for a, v in h.writes]}; the model reads "
                           f"{[hex(a) for _, a, _ in r.walk.reads]} and writes "
                           f"{[(hex(a), hex(v)) for a, v in r.walk.writes]}")
        return out

    def render(self) -> str:
        M = self.cfg.maxphyaddr
        t = self.first
        head = (f"Translate {vaddr_str(self.vaddr)}: {access_phrase(self.access, self.user)}\n"
                f"{flags_line(self.ctrl)}   MAXPHYADDR={M}\n")
        if self.warmup:
            head += "Translated first, to warm the TLB and page-walk cache: " + \
                ", ".join(vaddr_str(v) for v in self.warmup) + "\n"
        else:
            head += "The TLBs and the page-walk cache start empty (as after a CR3 write without PCIDs).\n"
        where = f"Answered by: {t.source()}."
        if t.response.tlb_hit:
            e = t.tlb_entry
            where += (f"\nThe entry holds frame {paddr_str(e.frame, M)} ({e.size.label} page) and the combined rights "
                      f"R/W={int(e.writable)} U/S={int(e.user)} XD={int(e.nx)} D={int(e.dirty)}.\n"
                      "No memory is read; below is the walk that the hit saves.")
        elif t.walk.reads:
            where += f" {len(t.walk.reads)} entr{'y' if len(t.walk.reads) == 1 else 'ies'} read from DRAM."
        body = render_translation(t.walk, self.vaddr, self.access, self.user, self.ctrl, M, t.pwc_entry)
        return "\n".join([head, where + "\n", body, self.render_cost()])

    def render_cost(self) -> str:
        dram = self.cfg.dram
        timing = f"fixed {dram.latency}-cycle reads" if dram.kind == "fixed" else \
            f"DDR tRCD={dram.tRCD} tCL={dram.tCL} tRP={dram.tRP}"
        rows = []
        for label, t, h in (("1st" if self.warmup else "1st (cold)", self.first, self.hw and self.hw[-2]),
                            ("2nd (same again)", self.second, self.hw and self.hw[-1])):
            r = t.response
            reads = 0 if r.tlb_hit else len(t.walk.reads)
            writes = 0 if r.tlb_hit else len(t.walk.writes)
            answer = "fault" if r.fault != FaultKind.NONE else paddr_str(r.paddr, self.cfg.maxphyaddr)
            rows.append([label, t.source(), answer, str(reads), str(writes), str(h.cycles) if h else "-"])
        if self.hw is None:
            title = "Cost (the hardware was not simulated):\n"
        else:
            title = (f"Cost on the hardware: hw.mmu.MMU in Amaranth's simulator, DRAM with {timing};\n"
                     "cycles from the request's accept to its response:\n")
        out = title + table(["translation", "answered by", "answer", "DRAM reads", "writes", "cycles"], rows,
                            right=frozenset({3, 4, 5}))
        first = self.first.response
        if first.fault == FaultKind.PAGE:
            out += "The 2nd walks again: a walk that faults fills neither the TLB nor the page-walk cache.\n"
        for line in self.mismatches():
            out += f"MISMATCH: {line}\n"
        return out


def explain(mem, ctrl: ControlRegs, vaddr: int, access: Access, user: bool, cfg: MMUConfig, *,
            warmup: tuple[int, ...] = ()) -> Explanation:
    """Translate ``vaddr`` twice on a fresh reference MMU, after the ``warmup`` translations.

    ``mem`` is only read: every A/D write lands in an overlay.  The cycle counts
    come from the hardware (sim/pysim.py, which the model may not import):
    the caller runs ``requests()`` there and stores the answers in ``hw``.
    """
    ref = RefMMU(cfg, OverlayMem(mem), ctrl)
    for va in warmup:
        ref.translate(va, access, user)
    first = trace(ref, vaddr, access, user)
    second = trace(ref, vaddr, access, user)
    return Explanation(vaddr, access, user, ctrl, cfg, list(warmup), first, second)


# --- the built-in demo address space ------------------------------------------------------------------

# (virtual address, size, physical address, flags, what it stands for).  Flags: w writable, u user,
# x executable (else XD=1), g global, a accessed, d dirty.
DEMO_MAPPINGS = (
    (0x0000_0000_0040_0000, PageSize.SIZE_4K, 0x0120_0000, "uxa", "program text (r-x)"),
    (0x0000_0000_0060_0000, PageSize.SIZE_4K, 0x0121_0000, "wuad", "program data (rw-)"),
    (0x0000_7F12_3456_7000, PageSize.SIZE_4K, 0x0123_4000, "wu", "heap page never touched (A=0, D=0)"),
    (0x0000_7F12_3456_8000, None, 0, "", "PTE = 0: not present"),
    (0x0000_7F12_3456_9000, None, 0, "", "PTE with reserved bit 51 set"),
    (0x0000_7F12_3460_0000, PageSize.SIZE_2M, 0x0140_0000, "wuad", "2 MiB page (PS=1 in the PDE)"),
    (0x0000_7FFF_FFFD_E000, PageSize.SIZE_4K, 0x0125_0000, "wuad", "stack page"),
    (0xFFFF_8880_0000_0000, PageSize.SIZE_1G, 0x0000_0000, "wgad", "kernel direct map, 1 GiB page (supervisor)"),
    (0xFFFF_FFFF_8100_0000, PageSize.SIZE_2M, 0x0100_0000, "xga", "kernel text, 2 MiB (supervisor r-x)"),
)


def demo_address_space(maxphyaddr: int = 40) -> tuple[PhysMem, ControlRegs]:
    """Page tables for ``DEMO_MAPPINGS`` in a 16 MiB machine; table pages come from a buddy allocator."""
    mem = PhysMem(16 << 20)
    pt = PageTables(mem, BuddyAllocator(2048, 1024), maxphyaddr)
    for va, size, pa, flags, _ in DEMO_MAPPINGS:
        if size is None:
            continue
        pt.map(va, pa, size, writable="w" in flags, user="u" in flags, nx="x" not in flags, global_="g" in flags,
               accessed="a" in flags, dirty="d" in flags)
    pt.set_pte(0x0000_7F12_3456_9000, 0x0126_0000 | P | RW | US | A | (1 << 51))
    return mem, ControlRegs(cr3=pt.pml4)


def demo_table() -> str:
    """DEMO_MAPPINGS as a table, for `mmu explain --help`."""
    rows = []
    for va, size, pa, flags, what in DEMO_MAPPINGS:
        mapped = size is not None
        rows.append([vaddr_str(va), size.label if mapped else "-", f"{pa:#010x}" if mapped else "-", what])
    return table(["virtual address", "size", "physical", "what"], rows)
