"""QEMU's x86-64 softmmu through Unicorn, set up to perform one load, store or instruction fetch through
page tables we write, in ring 0 or ring 3, and report what the CPU did.

Unicorn starts a UC_MODE_64 CPU in long mode at CPL 0 with paging off; we load EFER (LME, LMA, SCE, NXE),
CR4.PAE and CR3, then set CR0.PG.  Ring 3 is entered with ``sysretq`` (its CS/SS come from STAR with
fixed flat descriptors, so no GDT is read).  Unicorn never delivers an exception through the IDT: it
hands it to a UC_HOOK_INTR callback (qemu/accel/tcg/cpu-exec.c), with CR2 set, and exposes no error
code.  QEMU keeps that in ``env->error_code``, which ``uc_context_save`` copies with the rest of
CPUX86State; ``Machine.calibrate`` finds its offset in that copy from faults whose error code the SDM
fixes (4.7), and every later fault reads it from there.

Physical memory: the harness's own tables and code at 0x1000-0x5fff, the tables under test from
TABLES, 4 KiB data frames from FRAMES_4K, 2 MiB frames from FRAMES_2M, 1 GiB frames at 1, 2 and 3 GiB
(mapped lazily by QEMU, so untouched pages cost nothing).  The harness occupies PML4 slot HARNESS_SLOT.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_64, Uc
from unicorn.x86_const import (
    UC_CPU_X86_BROADWELL,
    UC_X86_REG_CR0,
    UC_X86_REG_CR2,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
    UC_X86_REG_EFLAGS,
    UC_X86_REG_R11,
    UC_X86_REG_RAX,
    UC_X86_REG_RBX,
    UC_X86_REG_RCX,
    UC_X86_REG_RDX,
)

from model.x86.pte import RW, US, A, Access, D, P

EFER, STAR = 0xC0000080, 0xC0000081
EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE = 1 << 0, 1 << 8, 1 << 10, 1 << 11
CR0_PE, CR0_ET, CR0_WP, CR0_PG = 1 << 0, 1 << 4, 1 << 16, 1 << 31
CR4_PAE, CR4_SMEP, CR4_SMAP = 1 << 5, 1 << 20, 1 << 21
EXCP_PF = 14

HARNESS_SLOT = 1  # PML4 index of the harness code: 0x80_0000_0000
HARNESS = HARNESS_SLOT << 39
_H_PDPT, _H_PD, _H_PT, _KERNEL_CODE, _USER_CODE = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000
TABLES = 0x10000  # the PML4 under test, then its other tables
TABLES_END = 0x100000
FRAMES_4K, FRAMES_4K_END = 0x100000, 0x400000
FRAMES_2M, FRAMES_2M_END = 0x400000, 0x2400000
FRAMES_1G = (1 << 30, 2 << 30, 3 << 30)
LOW_END = FRAMES_2M_END

# Harness code: the same snippets in the kernel page (U/S = 0) and the user page (U/S = 1).
_MOV_LOAD, _MOV_STORE, _JMP_RBX, _SYSRETQ = b"\x48\x8b\x03", b"\x48\x89\x13", b"\xff\xe3", b"\x48\x0f\x07"
_SNIPPET = {Access.READ: 0x00, Access.WRITE: 0x10, Access.FETCH: 0x20}
_SYSRET_AT = 0x30


def content(paddr: int) -> int:
    """The 8-byte word the data frames hold at ``paddr`` (8-aligned): ``mov eax, paddr >> 3; jmp $; nop``, so
    a load returns it, a store replaces it, and a fetch executes it and leaves paddr >> 3 in EAX.  The jump
    ends QEMU's translation block inside the word, so it never fetches the next page ahead of time."""
    return 0xB8 | ((paddr >> 3) & 0xFFFFFFFF) << 8 | 0x90FEEB << 40


def page_content(page: int) -> bytes:
    return b"".join(struct.pack("<Q", content(page + i)) for i in range(0, 4096, 8))


@dataclass(frozen=True)
class Outcome:
    """What QEMU did for one access: a #PF (error code, CR2) or the value loaded / EAX after the fetched
    instruction; ``tables`` is the table memory afterwards."""

    fault: bool
    error_code: int | None
    cr2: int | None
    value: int | None
    tables: bytes


class Machine:
    """One Unicorn CPU of ``cpu_model`` with the harness mapped; ``run`` performs one access."""

    def __init__(self, cpu_model: int = UC_CPU_X86_BROADWELL) -> None:
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.ctl_set_cpu_model(cpu_model)
        uc.mem_map(0, LOW_END)
        uc.mem_map(FRAMES_1G[0], len(FRAMES_1G) << 30)
        self.uc = uc
        self._error_code_at: int | None = None
        self._fault: tuple[int, int, bytes] | None = None
        uc.mem_write(_H_PDPT, struct.pack("<Q", _H_PD | P | RW | US | A))
        uc.mem_write(_H_PD, struct.pack("<Q", _H_PT | P | RW | US | A))
        uc.mem_write(_H_PT, struct.pack("<QQ", _KERNEL_CODE | P | RW | A | D, _USER_CODE | P | RW | US | A | D))
        for page in (_KERNEL_CODE, _USER_CODE):
            for access, offset in _SNIPPET.items():
                code = {Access.READ: _MOV_LOAD, Access.WRITE: _MOV_STORE, Access.FETCH: _JMP_RBX}[access]
                uc.mem_write(page + offset, code)
        uc.mem_write(_KERNEL_CODE + _SYSRET_AT, _SYSRETQ)
        uc.msr_write(EFER, EFER_LME | EFER_LMA | EFER_SCE | EFER_NXE)
        uc.msr_write(STAR, 0x10 << 48)  # sysretq: CS = 0x20 | 3, SS = 0x18 | 3
        uc.reg_write(UC_X86_REG_CR4, CR4_PAE)
        uc.reg_write(UC_X86_REG_CR3, TABLES)
        uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_WP | CR0_PG)
        self._ring0 = uc.context_save()
        uc.hook_add(UC_HOOK_INTR, self._on_exception)

    def _on_exception(self, uc, intno, _data) -> None:
        self._fault = (intno, uc.reg_read(UC_X86_REG_CR2), bytes(uc.context_save()))
        uc.emu_stop()

    def load_tables(self, image: bytes) -> bytes:
        """The tables under test: ``image`` is physical memory from TABLES on.  Returns it as loaded, with
        the harness's entry in PML4 slot HARNESS_SLOT."""
        slot = HARNESS_SLOT * 8
        image = image[:slot] + struct.pack("<Q", _H_PDPT | P | RW | US | A) + image[slot + 8:]
        self.uc.mem_write(TABLES, image)
        self._tables_len = len(image)
        return image

    def fill(self, page: int) -> None:
        self.uc.mem_write(page, page_content(page))

    def read64(self, paddr: int) -> int:
        return struct.unpack("<Q", self.uc.mem_read(paddr, 8))[0]

    def run(self, vaddr: int, access: Access, user: bool, *, wp: bool, nxe: bool, smep: bool, smap: bool,
            store_value: int = 0) -> Outcome:
        uc = self.uc
        uc.context_restore(self._ring0)
        uc.msr_write(EFER, EFER_LME | EFER_LMA | EFER_SCE | (EFER_NXE if nxe else 0))
        uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_PG | (CR0_WP if wp else 0))
        uc.reg_write(UC_X86_REG_CR4, CR4_PAE | (CR4_SMEP if smep else 0) | (CR4_SMAP if smap else 0))
        uc.reg_write(UC_X86_REG_CR3, TABLES)  # flushes QEMU's TLB
        uc.ctl_flush_tb()  # fetched frames change between runs
        uc.reg_write(UC_X86_REG_EFLAGS, 0x2)  # AC = 0: SMAP is never overridden
        uc.reg_write(UC_X86_REG_RBX, vaddr)
        uc.reg_write(UC_X86_REG_RDX, store_value)
        uc.reg_write(UC_X86_REG_RAX, 0)
        snippet = _SNIPPET[access]
        if user:
            uc.reg_write(UC_X86_REG_RCX, vaddr if access == Access.FETCH else HARNESS + 0x1000 + snippet)
            uc.reg_write(UC_X86_REG_R11, 0x2)
            start, count = HARNESS + _SYSRET_AT, 2
        else:
            start, count = HARNESS + snippet, 2 if access == Access.FETCH else 1
        self._fault = None
        uc.emu_start(start, 0, count=count)
        tables = bytes(uc.mem_read(TABLES, self._tables_len))
        if self._fault is None:
            return Outcome(False, None, None, uc.reg_read(UC_X86_REG_RAX), tables)
        intno, cr2, context = self._fault
        assert intno == EXCP_PF, f"exception {intno} at {vaddr:#x} ({access.name}, user={user}), not a page fault"
        code = None if self._error_code_at is None else \
            struct.unpack_from("<i", context, self._error_code_at)[0]
        return Outcome(True, code, cr2, None, tables)

    def fault_context(self) -> bytes:
        assert self._fault is not None
        return self._fault[2]

    def calibrate(self, cases) -> None:
        """Find env->error_code in the saved context: ``cases`` are (run kwargs, the SDM's error code); the
        offset is the one 4-byte field that holds each expected code after its fault."""
        candidates = None
        for kwargs, expected in cases:
            out = self.run(**kwargs)
            assert out.fault, f"calibration access {kwargs} did not fault"
            context = self.fault_context()
            hits = {i for i in range(0, len(context) - 3, 4) if struct.unpack_from("<i", context, i)[0] == expected}
            candidates = hits if candidates is None else candidates & hits
        assert candidates and len(candidates) == 1, f"error code field not unique in the context: {candidates}"
        self._error_code_at = candidates.pop()
