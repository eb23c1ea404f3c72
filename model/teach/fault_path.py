"""What the kernel did with the hardware's page fault: the rest of ``mmu explain WORKLOAD VADDR``.

The hardware stops at the fault and hands the error code to the kernel.  ``follow_fault`` hands it to
the kernel model's own handler (``model.mm.memory.handle_mm_fault``, as arch/x86/mm/fault.c does), and
reads what changed, from the outside, the way a student with a debugger would: the vmstat counters,
the leaf entry before and after, the VMA, the shootdowns the kernel sent, the task's fate and free's
``used``.  From these it names the Linux path that ran (demand-zero, the shared zero page, copy on
write, a file page from the page cache or the disk, swap-in, stack growth, a signal), and then walks
the same address again, as the CPU does when it retries the faulting instruction.

Reading the effects instead of asking the handler to report itself keeps the teaching side out of the
kernel's code paths: whatever the kernel model does, this shows what it really did.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.config import MMUConfig
from model.mm.memory import handle_mm_fault, leaf_entries
from model.mm.mmap import find_vma
from model.proc.show_mem import meminfo
from model.teach.explain import ENTRY_NAMES, Explanation, explain, paddr_str, render_ad, render_result, table
from model.user.procps import mem_values, parse_meminfo
from model.x86.pte import PAGE_SIZE, PF_WR, RW, US, XD, A, Access, D, FaultKind, P, addr_mask
from model.x86.tlbflush import CtlOp

# The handler each path ends in, and what it does, in the words of Linux's mm/memory.c.
PATHS = {
    "zero-page": ("do_anonymous_page", "a read of anonymous memory never written: the PTE maps the shared zero "
                                       "page read-only; no memory is allocated until the first write"),
    "demand-zero": ("do_anonymous_page", "a write to anonymous memory never touched: a zeroed frame from the buddy "
                                         "allocator, mapped writable and dirty"),
    "cow": ("do_wp_page -> wp_page_copy", "a write to a page shared read-only (after fork, or the zero page): "
                                          "the kernel copies it into a new frame for this process"),
    "reuse": ("do_wp_page -> wp_page_reuse", "a write to a read-only page that only this process maps: no copy, "
                                             "the PTE just becomes writable"),
    "file-cache": ("do_read_fault -> filemap_fault", "a file page already in the page cache (a minor fault)"),
    "file-disk": ("do_read_fault -> filemap_fault", "a file page read from the disk into the page cache "
                                                    "(a major fault)"),
    "file-cow": ("do_cow_fault", "a write to a private file mapping: a private copy of the file page"),
    "shared-write": ("do_shared_fault / wp_page_shared", "a write to a shared mapping: the page cache page itself "
                                                         "is mapped writable and marked dirty"),
    "swap-in": ("do_swap_page", "the PTE held a swap entry: the page is read back from the swap device "
                                "(a major fault)"),
    "hugetlb": ("hugetlb_fault", "a page from the hugetlb pool reserved at boot"),
    "spurious": ("spurious fault", "the PTE already allowed the access; the TLB held an older copy, so the "
                                   "kernel only flushes it"),
    "signal": ("bad_area -> force_sig", "no VMA allows this access: the process gets a fatal signal"),
}


@dataclass
class FaultPath:
    """The kernel's side of one page fault and the retried translation."""

    vaddr: int
    error_code: int
    path: str  # a key of PATHS
    stack_grew: tuple[int, int] | None  # the stack VMA's start before and after, when the fault grew it
    leaf_before: int  # the leaf-level entry for the page (0 when none), before and after
    leaf_after: int
    around: int  # other pages of the VMA the same fault mapped (fault-around)
    major: bool  # the page came from the disk or swap (pgmajfault)
    shootdowns: list[tuple[CtlOp, int]]
    used_kb: tuple[int, int]  # free's "used", before and after
    dmesg: list[str]  # what the kernel logged
    retry: Explanation | None  # the same translation again (None when the process died)
    maxphyaddr: int

    def render(self) -> str:
        func, what = PATHS[self.path]
        out = [f"The kernel's side: the CPU delivers #PF with CR2 = {self.vaddr:#x} and error code "
               f"{self.error_code:#x}; arch/x86/mm/fault.c calls handle_mm_fault()."]
        if self.stack_grew:
            out.append(f"Stack growth first (expand_stack): the [stack] VMA now starts at {self.stack_grew[1]:#x} "
                       f"instead of {self.stack_grew[0]:#x}.")
        out.append(f"Path: {self.path} ({func}): {what}."
                   + (" The page was read from the disk first (a major fault)." if self.major and self.path in
                      ("shared-write", "file-cow") else ""))
        out.extend(f"Kernel log: {line}" for line in self.dmesg)
        if self.path != "signal":
            out.append("Mapped: " + self._mapped())
            if self.around:
                out.append(f"Fault-around mapped {self.around} more page(s) of the same VMA in the same fault.")
        out.append("Shootdown: " + (", ".join(f"{op.name} {value:#x}" for op, value in self.shootdowns)
                                    if self.shootdowns else
                                    "none (a not-present entry is never cached, so nothing can be stale)"
                                    if not self.leaf_before & P else "none"))
        before, after = self.used_kb
        out.append(f"used (free, MemTotal - MemAvailable): {before} KiB before, {after} KiB after "
                   f"({after - before:+d} KiB)")
        text = "\n".join(out) + "\n"
        if self.retry is None:
            return text + "No retry: the process is gone.\n"
        t = self.retry.first
        where = f"Retried translation (the CPU restarts the instruction): {t.source()}."
        rows = [[ENTRY_NAMES[level], paddr_str(addr, self.maxphyaddr), f"{value:#018x}"]
                for level, addr, value in t.walk.reads]
        body = table(["entry", "address", "value"], rows) if rows else ""
        return (text + "\n" + where + "\n" + body + render_result(t.walk, self.vaddr, self.maxphyaddr)
                + render_ad(t.walk, self.maxphyaddr))

    def _mapped(self) -> str:
        v = self.leaf_after
        if not v & P:
            return f"the entry is still not present ({v:#x})"
        M = self.maxphyaddr
        flags = f"R/W={int(bool(v & RW))} U/S={int(bool(v & US))} XD={int(bool(v & XD))} A={int(bool(v & A))} " \
                f"D={int(bool(v & D))}"
        return (f"leaf entry {self.leaf_before:#018x} -> {v:#018x} (frame {paddr_str(v & addr_mask(M), M)}, "
                f"{flags})")


def _leaf(mm, vaddr: int) -> int:
    page = vaddr & ~(PAGE_SIZE - 1)
    found = leaf_entries(mm, page, page + PAGE_SIZE)
    return found[0][1] if found else 0


def _used_kb(k) -> int:
    return mem_values(parse_meminfo(meminfo(k))).used


def _present_pages(mm, vma) -> int:
    return sum(1 for _, value in leaf_entries(mm, vma.start, vma.end) if value & P)


def follow_fault(k, task, vaddr: int, access: Access, user: bool, error_code: int, cfg: MMUConfig) -> FaultPath:
    """Run the kernel model's fault handler on ``task`` for this fault, and translate again after it."""
    mm = task.mm
    vma = find_vma(mm, vaddr)
    start_before = vma.start if vma is not None else None
    present_before = _present_pages(mm, vma) if vma is not None else 0
    leaf_before = _leaf(mm, vaddr)
    counters = dict(k.vmstat)
    dmesg_len = len(k.dmesg)
    used_before = _used_kb(k)
    shootdowns: list[tuple[CtlOp, int]] = []
    listener = lambda op, value: shootdowns.append((op, value))  # noqa: E731
    k.flush_listeners.append(listener)
    try:
        alive = handle_mm_fault(k, task, vaddr, error_code) and task.alive
    finally:
        k.flush_listeners.remove(listener)
    delta = {name: k.vmstat[name] - counters.get(name, 0) for name in k.vmstat}
    leaf_after = _leaf(mm, vaddr) if alive else 0
    grew = None
    if alive and vma is not None and start_before is not None and vma.start < start_before:
        grew = (start_before, vma.start)
    around = 0
    if alive and vma is not None:
        around = max(0, _present_pages(mm, vma) - present_before - (0 if leaf_before & P else 1))
    path = _classify(k, vma, alive, delta, leaf_before, leaf_after, error_code)
    retry = explain(k.mem, k.ctrl(task), vaddr, access, user, cfg) if alive else None
    return FaultPath(vaddr, error_code, path, grew, leaf_before, leaf_after, around, bool(delta.get("pgmajfault")),
                     shootdowns,
                     (used_before, _used_kb(k)), list(k.dmesg)[dmesg_len:], retry, cfg.maxphyaddr)


def _classify(k, vma, alive: bool, delta: dict, before: int, after: int, error_code: int) -> str:
    """The path, from what changed (see PATHS)."""
    write = bool(error_code & PF_WR)
    if not alive:
        return "signal"
    if vma.is_hugetlb:
        return "hugetlb"
    if delta.get("pswpin"):
        return "swap-in"
    if before & P:
        if not write or before & RW:
            return "spurious"
        if delta.get("cow_fault"):
            return "cow"
        return "shared-write" if vma.shared else "reuse"
    if vma.is_anonymous:
        zero = (after & addr_mask(52)) >> 12 == k.zero_pfn
        return "zero-page" if zero else "demand-zero"
    if write:
        return "shared-write" if vma.shared else "file-cow"
    return "file-disk" if delta.get("pgmajfault") else "file-cache"


def fault_to_follow(ex: Explanation) -> int | None:
    """The error code of the explained translation's page fault, or None when there is none to follow."""
    r = ex.first.response
    return r.error_code if r.fault == FaultKind.PAGE else None
