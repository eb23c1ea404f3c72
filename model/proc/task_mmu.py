"""/proc/PID/maps (Linux fs/proc/task_mmu.c show_map_vma()).

Each line: ``start-end perms offset major:minor inode``, and when the VMA has a
name, spaces up to column 73 (``seq_setwidth(25 + sizeof(void *) * 6 - 1)``
then ``seq_pad``) and the name: the file path, ``[heap]``, ``[stack]``,
``/dev/zero (deleted)`` for shared anonymous memory (a shmem file) or
``/anon_hugepage (deleted)`` for hugetlb.
"""

from __future__ import annotations

from model.x86.pte import PAGE_SHIFT

_PAD = 25 + 8 * 6 - 1
DISK_DEV = (8, 1)  # the simulated disk is sda1
SHMEM_DEV = (0, 1)
HUGETLBFS_DEV = (0, 16)


def vma_name(mm, vma) -> tuple[str, tuple[int, int], int]:
    """(pathname, device, inode) of a VMA."""
    if vma.file is not None:
        return vma.file.path, DISK_DEV, vma.file.ino
    if vma.is_hugetlb:
        return "/anon_hugepage (deleted)", HUGETLBFS_DEV, vma.ino
    if vma.mapping is not None:
        return "/dev/zero (deleted)", SHMEM_DEV, vma.ino
    if vma.start <= mm.brk and vma.end >= mm.start_brk and vma.start >= mm.start_brk:
        return "[heap]", (0, 0), 0
    if vma.start <= mm.start_stack <= vma.end and vma.name == "[stack]":
        return "[stack]", (0, 0), 0
    return "", (0, 0), 0


def show_maps(task) -> str:
    mm = task.mm
    lines = []
    for vma in mm.vmas:
        name, (major, minor), ino = vma_name(mm, vma)
        offset = vma.pgoff << PAGE_SHIFT if (vma.file is not None or vma.mapping is not None) else 0
        line = f"{vma.start:08x}-{vma.end:08x} {vma.perms()} {offset:08x} {major:02x}:{minor:02x} {ino} "
        if name:
            line = line.ljust(_PAD) + " " + name
        lines.append(line + "\n")
    return "".join(lines)
