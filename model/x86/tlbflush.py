"""Operations that change what a TLB may hold: CR3 writes and flushes.

Named after Linux's arch/x86/include/asm/tlbflush.h.  The value of each member is
its encoding on the MMU's control port, so the kernel model, the reference MMU
and the hardware all speak the same numbers.
"""

from enum import IntEnum

CR3_NOFLUSH = 1 << 63  # with CR4.PCIDE = 1, a CR3 write that keeps the new PCID's entries


class CtlOp(IntEnum):
    WRITE_CR3 = 0  # value = new CR3; bit 63 = no-flush (only honoured with PCIDE)
    FLUSH_ALL = 1  # drop every TLB and PWC entry
    FLUSH_ALL_KEEP_GLOBAL = 2  # drop every non-global TLB entry and every PWC entry
    FLUSH_VA = 3  # INVLPG: value = the virtual address
    FLUSH_PCID = 4  # value[11:0] = the PCID whose non-global entries go
