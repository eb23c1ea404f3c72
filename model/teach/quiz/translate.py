"""Quiz: walk a small page-table dump by hand, as the hardware walker does.

A random path of four (or three, for a 2 MiB page) entries is planted in a
sparse memory, plus distractors at the indices students mistake for the right
one (the neighbour, another level's index).  One defect is planted now and then:
a non-present entry, a missing permission, a reserved bit, or a non-canonical
address.  The answer is ``model.reference.ref_walker.walk`` on that memory, explained by
``model.teach.explain.render_translation``.
"""

from __future__ import annotations

import random

from model.reference.ref_walker import ControlRegs, walk
from model.teach.explain import access_phrase, flags_line, render_translation, table, vaddr_str
from model.teach.quiz import Knob, Quiz, choice
from model.x86.pte import PF_ID, PF_P, PF_RSVD, PF_US, PF_WR, PS, RW, US, XD, A, Access, D, FaultKind, Level, P

DESCRIPTION = "walk a page-table dump: the physical address, or the fault and its error code"
KNOBS = (
    Knob("access", "r|w|x", "the access: r (read), w (write) or x (instruction fetch)",
         choice("access", {"r": Access.READ, "w": Access.WRITE, "x": Access.FETCH})),
    Knob("mode", "user|supervisor", "the privilege of the access", choice("mode", {"user": True, "supervisor": False})),
)
MAXPHYADDR = 40
_LEVELS = (Level.PML4, Level.PDPT, Level.PD, Level.PT)


class DictMem:
    """Sparse memory of 64-bit words: only the entries the quiz plants exist."""

    def __init__(self) -> None:
        self.words: dict[int, int] = {}

    def read64(self, addr: int) -> int:
        return self.words.get(addr, 0)

    def write64(self, addr: int, value: int) -> None:
        self.words[addr] = value


def _vaddr(rng: random.Random) -> int:
    """A random address, a kernel-half one now and then, a non-canonical one rarely."""
    va = rng.getrandbits(47) & ~0x7
    roll = rng.random()
    if roll < 0.2:
        va |= 0xFFFF_8000_0000_0000
    elif roll < 0.25:
        va |= 0x0000_8000_0000_0000  # bit 47 set, 63:48 clear
    return va


def _plant(rng: random.Random, mem: DictMem, ctrl_flags: dict, vaddr: int, access: Access,
           user: bool) -> int:
    """Write the path for ``vaddr`` and one defect; returns CR3."""
    frames = rng.sample(range(0x10, 0x80), 8)
    tables = [f << 12 for f in frames[:4]]
    huge = rng.random() < 0.25
    path_levels = _LEVELS[:3] if huge else _LEVELS
    addrs = [tables[i] + 8 * level.index(vaddr) for i, level in enumerate(path_levels)]
    values = []
    for i, level in enumerate(path_levels):
        if level is path_levels[-1]:
            frame = rng.randrange(0x200, 0x1000) << 12
            if huge:
                frame = (frame >> 21 << 21) | PS
            v = frame | P | US | RW | A | (D if rng.random() < 0.5 else 0)
            if access != Access.FETCH and rng.random() < 0.5:
                v |= XD
        else:
            v = tables[i + 1] | P | RW | US | A | D  # Linux _PAGE_TABLE
        values.append(v)

    defect = rng.choices(("none", "not-present", "rights", "reserved"), (35, 20, 35, 10))[0]
    at = rng.randrange(len(values))
    if defect == "not-present":
        values[at] = 0 if rng.random() < 0.5 else values[at] & ~P
        values = values[:at + 1]
    elif defect == "rights":
        choices = []
        if user:
            choices.append(US)
        if access == Access.WRITE:
            choices.append(RW)
        if access == Access.FETCH:
            choices.append(XD)
        if not user:
            ctrl_flags["smap" if access != Access.FETCH else "smep"] = True  # the user page becomes the problem
        if choices:
            bit = rng.choice(choices)
            values[at] = values[at] | XD if bit == XD else values[at] & ~bit
    elif defect == "reserved":
        values[at] |= 1 << rng.randrange(MAXPHYADDR, 52)
    if not user and defect != "rights" and rng.random() < 0.5:
        values[-1] &= ~US  # a supervisor page
    for addr, v in zip(addrs, values):
        mem.write64(addr, v)
    # distractors: the neighbouring entry, and the entry another level's index would pick
    for i, level in enumerate(path_levels):
        wrong = {(level.index(vaddr) + rng.choice((-1, 1))) % 512,
                 _LEVELS[(i + 1) % 4].index(vaddr)} - {level.index(vaddr)}
        for index in wrong:
            frame = frames[4 + rng.randrange(4)] << 12
            mem.write64(tables[i] + 8 * index, frame | P | RW | US | A | D | (XD if rng.random() < 0.2 else 0))
    return tables[0]


def answer_line(result) -> str:
    if result.fault == FaultKind.NONCANONICAL:
        return "Answer: general protection fault (#GP): the address is not canonical"
    if result.fault == FaultKind.PAGE:
        code = result.error_code
        bits = " ".join(f"{n}={int(bool(code & m))}" for n, m in
                        (("P", PF_P), ("W/R", PF_WR), ("U/S", PF_US), ("RSVD", PF_RSVD), ("I/D", PF_ID)))
        return f"Answer: page fault (#PF), error code {code:#04x} ({bits})"
    return f"Answer: physical address {result.paddr:#x} ({result.size.label} page)"


def make(seed: int, *, access: Access | None = None, mode: bool | None = None) -> Quiz:
    rng = random.Random(seed)
    vaddr = _vaddr(rng)
    drawn_access = rng.choices((Access.READ, Access.WRITE, Access.FETCH), (4, 4, 2))[0]
    drawn_user = rng.random() < 0.7
    access = drawn_access if access is None else access
    user = drawn_user if mode is None else mode
    flags = {"smep": False, "smap": False}
    mem = DictMem()
    cr3 = _plant(rng, mem, flags, vaddr, access, user)  # tables even for a non-canonical one: no give-away
    ctrl = ControlRegs(cr3=cr3, wp=True, nxe=True, **flags)
    rows = [[f"{addr:#010x}", f"{value:#018x}"] for addr, value in sorted(mem.words.items())]
    question = (
        f"4-level x86-64 paging, MAXPHYADDR = {MAXPHYADDR}.\n{flags_line(ctrl)}\n"
        "Page-table entries in physical memory (every other entry is 0):\n"
        + table(["address", "value"], rows)
        + f"\nA {access_phrase(access, user)} of virtual address {vaddr_str(vaddr)}.\n"
        "What physical address does it reach?  If it faults instead: which fault, and with what error code?\n")
    result = walk(mem, ctrl, vaddr, access, user, maxphyaddr=MAXPHYADDR, apply=False)
    worked = render_translation(result, vaddr, access, user, ctrl, MAXPHYADDR)
    return Quiz(question, worked, answer_line(result))
