"""Process creation and exit: exec of a program, fork with copy-on-write, exit (kernel/fork.c, kernel/exit.c, fs/binfmt_elf.c).

``spawn`` builds the address space that execve of a small static x86-64 ELF
leaves (binfmt_elf.c): text r-xp, read-only data r--p and data rw-p mapped
from the program file, bss anonymous, the break right above it, and the stack
at the top of user space.  ``do_fork`` copies the VMAs and page tables with
every private writable page made read-only in both processes (COW).
``do_exit`` unmaps everything (exit_mmap), frees the page tables and the
task's kernel objects.
"""

from __future__ import annotations

import copy

from model.mm.memory import copy_page_range, zap_range
from model.mm.mm_types import MM, VM_EXEC, VM_READ, VM_WRITE, VMA, Task
from model.mm.mmap import SyscallError, insert_vma, mmap_base, page_align, remove_vma, setup_stack
from model.x86.pgtable import PageTables
from model.x86.pte import PAGE_SIZE, Access

THREAD_SIZE_ORDER = 2  # x86-64 kernel stacks are 16 KiB
ELF_BASE = 0x400000  # non-PIE x86-64 executables link at 4 MiB
TEXT, RODATA, DATA, BSS = 64 << 10, 16 << 10, 8 << 10, 8 << 10


def _new_mm(k, task_rng_base: int) -> MM:
    pt = PageTables(k.mem, k.pgtable_pages, k.maxphyaddr)
    mm = MM(pt=pt, pcid=0, mmap_base=task_rng_base)
    mm.slab_addr = k.caches["mm_struct"].alloc()
    return mm


def spawn(k, name: str, oom_score_adj: int = 0) -> Task:
    """fork + execve of /usr/bin/NAME: a fresh address space with the ELF layout."""
    task = Task(pid=k.alloc_pid(), name=name, mm=None, oom_score_adj=oom_score_adj)
    if not k.ensure_free(16, task):  # the new process allocates (the OOM report names it)
        raise SyscallError("ENOMEM", f"spawn {name}")
    path = f"/usr/bin/{name}"
    prog = k.disk.files.get(path) or k.disk.create(path, TEXT + RODATA + DATA)
    pid = task.pid
    mm = task.mm = _new_mm(k, mmap_base(k.rng, k.aslr))
    mm.pcid = k.pcid_for(pid)
    task.task_slab = k.caches["task_struct"].alloc()
    task.stack_pfn = k.stack_pages.alloc_pages(THREAD_SIZE_ORDER)
    k.tasks[pid] = task
    from model.mm.filemap import open_file
    open_file(k, prog)
    layout = ((ELF_BASE, TEXT, VM_READ | VM_EXEC, 0), (ELF_BASE + TEXT, RODATA, VM_READ, TEXT),
              (ELF_BASE + TEXT + RODATA, DATA, VM_READ | VM_WRITE, TEXT + RODATA))
    for start, size, flags, offset in layout:
        insert_vma(k, mm, VMA(start, start + size, flags, file=prog, pgoff=offset // PAGE_SIZE))
    bss = ELF_BASE + TEXT + RODATA + DATA
    insert_vma(k, mm, VMA(bss, bss + BSS, VM_READ | VM_WRITE))
    brk = bss + BSS
    if k.aslr:
        brk += page_align(k.rng.randrange(0, 0x02000000))  # arch_randomize_brk()
    mm.start_brk = mm.brk = brk
    setup_stack(k, mm, k.rng, k.aslr)
    # The loader's first steps: fetch the entry point, build argv/envp at the stack top.
    k.access(task, ELF_BASE, Access.FETCH)
    if task.alive:
        k.access(task, mm.start_stack - 8, Access.WRITE)
    return task


def do_fork(k, parent: Task, name: str | None = None) -> Task:
    """fork(): a child with a copy-on-write copy of the parent's address space."""
    src = parent.mm
    if not k.ensure_free(src.pt.table_pages + len(src.vmas) // 16 + 4, parent):
        raise SyscallError("ENOMEM", f"fork of {parent.name}")
    pid = k.alloc_pid()
    mm = _new_mm(k, src.mmap_base)
    mm.pcid = k.pcid_for(pid)
    mm.start_brk, mm.brk, mm.start_stack = src.start_brk, src.brk, src.start_stack
    child = Task(pid=pid, name=name or parent.name, mm=mm, oom_score_adj=parent.oom_score_adj)
    child.task_slab = k.caches["task_struct"].alloc()
    child.stack_pfn = k.stack_pages.alloc_pages(THREAD_SIZE_ORDER)
    child.vars = dict(parent.vars)
    child.stamps = dict(parent.stamps)
    child.heap = copy.deepcopy(parent.heap)
    if child.heap is not None:
        child.heap.task = child
    for vma in src.vmas:
        new = VMA(vma.start, vma.end, vma.flags, vma.file, vma.pgoff, vma.mapping, vma.name, vma.page_size,
                  ino=vma.ino)
        insert_vma(k, mm, new)
        copy_page_range(k, src, mm, vma)
    k.flush_tlb_mm(src)  # dup_mmap(): the parent's PTEs were write-protected
    k.tasks[pid] = child
    k.vmstat["nr_forks"] += 1
    return child


def exit_mmap(k, task: Task) -> None:
    mm = task.mm
    for vma in list(mm.vmas):
        if vma.is_hugetlb and vma.resv_owner:
            k.hugetlb.unreserve_range(mm, vma)
        zap_range(k, mm, vma, vma.start, vma.end)
        remove_vma(k, mm, vma)


def do_exit(k, task: Task, sig: str | None, reason: str) -> None:
    """exit() or death by signal: free the address space and the task's kernel objects."""
    mm = task.mm
    if mm is None:
        return
    if k.current is task:
        k.switch_to_kernel()
    exit_mmap(k, task)
    mm.pt.destroy()
    if k.pcide:
        from model.x86.tlbflush import CtlOp
        k.shootdown(CtlOp.FLUSH_PCID, mm.pcid)  # the PCID will be reused by another pid
    k.caches["mm_struct"].free(mm.slab_addr)
    k.caches["task_struct"].free(task.task_slab)
    k.stack_pages.free_pages(task.stack_pfn, THREAD_SIZE_ORDER)
    task.mm = None
    task.exit_signal = sig
    task.exit_reason = reason
    task.stamps.clear()
    del k.tasks[task.pid]
    k.dead.append(task)
