"""A user-space malloc on the model's system calls, following glibc's ptmalloc2 main arena.

What it keeps from glibc (malloc/malloc.c):

- chunk sizes: ``request2size`` = max(MINSIZE 32, (n + SIZE_SZ 8 + 15) & ~15),
- requests of M_MMAP_THRESHOLD (128 KiB) or more get their own anonymous
  ``mmap`` of page_align(n + SIZE_SZ); ``free`` returns it with ``munmap`` at
  once, and raises the threshold to that size (the dynamic threshold, up to
  DEFAULT_MMAP_THRESHOLD_MAX 32 MiB; M_TRIM_THRESHOLD becomes twice it),
- smaller requests come from the heap: a free chunk, else the top chunk,
  grown by ``brk`` of (nb + M_TOP_PAD 128 KiB + MINSIZE - top) rounded to pages
  (sysmalloc), falling back to mmap when brk fails,
- ``free`` keeps heap chunks for reuse, coalescing neighbours and the top; when
  the top exceeds M_TRIM_THRESHOLD (128 KiB) the break is lowered (systrim),
- ``calloc`` skips the memset for mmapped chunks (fresh pages are zero) and
  for the part of a heap chunk that sbrk just added,
- ``realloc`` grows or shrinks in place when it can, else malloc-copy-free.

Every malloc and free leaves a ``malloc`` decision in the kernel's decision
log (``k.decisions``) with the numbers it compared (nb, the threshold of the
moment, the top chunk, the brk increment), and counts the brk, mmap and munmap
calls it makes in ``k.syscalls``.

Where it simplifies: one address-ordered free list with best fit stands for
tcache, fastbins, the unsorted, small and large bins (so which chunk is reused
can differ from glibc); chunk headers live outside simulated memory, so malloc
itself touches no page (glibc writes the size fields of the chunk and of the
new top, touching up to two pages); realloc of an mmapped chunk copies instead
of mremap; there is one arena (no threads).
"""

from __future__ import annotations

import bisect

from model.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, SyscallError, do_brk, do_mmap, do_munmap
from model.x86.pte import PAGE_SIZE, Access

SIZE_SZ = 8
MALLOC_ALIGNMENT = 16
MINSIZE = 32
DEFAULT_MMAP_THRESHOLD = 128 << 10
DEFAULT_MMAP_THRESHOLD_MAX = 32 << 20  # 4 * 1024 * 1024 * sizeof(long)
DEFAULT_TRIM_THRESHOLD = 128 << 10
DEFAULT_TOP_PAD = 128 << 10


def request2size(n: int) -> int:
    return max(MINSIZE, (n + SIZE_SZ + MALLOC_ALIGNMENT - 1) & ~(MALLOC_ALIGNMENT - 1))


def _page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


class Malloc:
    """The heap of one process.  Pointers are user addresses (chunk + 16, as chunk2mem)."""

    def __init__(self, kernel, task) -> None:
        self.kernel = kernel
        self.task = task
        self.mmap_threshold = DEFAULT_MMAP_THRESHOLD
        self.trim_threshold = DEFAULT_TRIM_THRESHOLD
        self.top = 0  # start of the top chunk; 0 until the first heap allocation
        self.top_size = 0
        self.free_chunks: list[tuple[int, int]] = []  # (chunk address, size), address order
        self.chunks: dict[int, tuple[int, int, bool]] = {}  # user pointer -> (chunk, size, mmapped)
        self.n_mmaps = 0

    def __deepcopy__(self, memo):
        """fork: the child gets an identical heap state (the kernel is shared, not copied)."""
        new = Malloc.__new__(Malloc)
        new.__dict__.update(self.__dict__)
        new.free_chunks = list(self.free_chunks)
        new.chunks = dict(self.chunks)
        return new

    # --- allocation ---------------------------------------------------------

    def malloc(self, n: int) -> int:
        """Returns the pointer, or 0 (NULL) when the kernel refuses memory."""
        if n < 0:
            return 0
        nb = request2size(n)
        why = {"n": n, "nb": nb, "threshold": self.mmap_threshold}
        if nb >= self.mmap_threshold:
            return self._mmap_chunk(nb, "mmap", why)
        i = self._best_fit(nb)
        if i is not None:
            chunk, size = self.free_chunks.pop(i)
            self._decide("heap", why, chunk_size=size)
            if size - nb >= MINSIZE:
                bisect.insort(self.free_chunks, (chunk + nb, size - nb))
                size = nb
            return self._hand_out(chunk, size, False)
        top_size = self.top_size
        if top_size < nb + MINSIZE:
            grow = self._sysmalloc(nb)
            if not grow:
                return self._mmap_chunk(nb, "mmap-fallback", why)  # brk refused: sysmalloc falls back to mmap
            self._decide("brk", why, top=top_size, grow=grow)
        else:
            self._decide("heap", why, top=top_size)
        chunk = self.top
        self.top += nb
        self.top_size -= nb
        return self._hand_out(chunk, nb, False)

    def calloc(self, count: int, size: int) -> int:
        """malloc + memset: an mmapped chunk is not cleared, and of a chunk carved from a
        top that sbrk just grew only the old top's part is (glibc __libc_calloc)."""
        oldtop, oldtopsize = self.top, self.top_size
        ptr = self.malloc(count * size)
        if not ptr:
            return 0
        chunk, csize, mmapped = self.chunks[ptr]
        if mmapped:
            return ptr
        if chunk == oldtop and csize > oldtopsize:
            csize = oldtopsize
        self.touch(ptr, max(chunk + csize - ptr, 0))
        return ptr

    def realloc(self, ptr: int, n: int) -> int:
        if not ptr:
            return self.malloc(n)
        if n == 0:
            self.free(ptr)
            return 0
        chunk, size, mmapped = self.chunks[ptr]
        nb = request2size(n)
        if mmapped and nb + SIZE_SZ <= size:
            return ptr
        if not mmapped and nb <= size:  # shrink in place
            if size - nb >= MINSIZE:
                self.chunks[ptr] = (chunk, nb, False)
                self._free_chunk(chunk + nb, size - nb)
            return ptr
        if not mmapped and chunk + size == self.top and self.top_size >= nb - size + MINSIZE:
            self.top += nb - size
            self.top_size -= nb - size
            self.chunks[ptr] = (chunk, nb, False)
            return ptr
        new = self.malloc(n)
        if not new:
            return 0
        self.copy(new, ptr, min(size - 2 * SIZE_SZ, n))
        self.free(ptr)
        return new

    def free(self, ptr: int) -> None:
        if not ptr:
            return
        chunk, size, mmapped = self.chunks.pop(ptr)
        if mmapped:
            why = {"size": size, "threshold": self.mmap_threshold}
            if self.mmap_threshold < size <= DEFAULT_MMAP_THRESHOLD_MAX:
                self.mmap_threshold = size  # the dynamic threshold
                self.trim_threshold = 2 * size
            self._decide("munmap", why, new_threshold=self.mmap_threshold)
            self.kernel.syscalls["munmap"] += 1
            do_munmap(self.kernel, self.task, chunk, size)
            self.n_mmaps -= 1
            return
        self._free_chunk(chunk, size)
        trim = self._systrim() if self.top_size >= self.trim_threshold else 0
        self._decide("trim" if trim else "free", {"size": size, "trim_threshold": self.trim_threshold},
                     top=self.top_size + trim, trim=trim)

    # --- memory the program reaches through its pointers ---------------------

    def touch(self, ptr: int, length: int, access: Access = Access.WRITE) -> bool:
        """Access every page of [ptr, ptr + length); False if the task died on the way."""
        k = self.kernel
        va = ptr
        while va < ptr + length:
            if k.access(self.task, va, access) is None:
                return False
            va = (va & ~(PAGE_SIZE - 1)) + PAGE_SIZE
        return True

    def copy(self, dst: int, src: int, length: int) -> None:
        if self.touch(src, length, Access.READ):
            self.touch(dst, length, Access.WRITE)

    # --- internals -------------------------------------------------------------

    def _hand_out(self, chunk: int, size: int, mmapped: bool) -> int:
        ptr = chunk + 2 * SIZE_SZ
        self.chunks[ptr] = (chunk, size, mmapped)
        return ptr

    def _best_fit(self, nb: int) -> int | None:
        best = None
        for i, (_, size) in enumerate(self.free_chunks):
            if size >= nb and (best is None or size < self.free_chunks[best][1]):
                best = i
        return best

    def _decide(self, outcome: str, why: dict, **more) -> None:
        self.kernel.decisions.record("malloc", outcome, pid=self.task.pid, name=self.task.name, **why, **more)

    def _mmap_chunk(self, nb: int, outcome: str, why: dict) -> int:
        size = _page_align(nb + SIZE_SZ)
        self.kernel.syscalls["mmap"] += 1
        try:
            chunk = do_mmap(self.kernel, self.task, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        except SyscallError:
            self._decide("enomem", why, size=size)
            return 0
        self._decide(outcome, why, size=size)
        self.n_mmaps += 1
        return self._hand_out(chunk, size, True)

    def _sysmalloc(self, nb: int) -> int:
        """Grow the top with brk; returns the increment, or 0 when the kernel refused it."""
        mm = self.task.mm
        if self.top == 0:
            self.top = mm.brk
        grow = _page_align(nb + DEFAULT_TOP_PAD + MINSIZE - self.top_size)
        old = mm.brk
        self.kernel.syscalls["brk"] += 1
        if do_brk(self.kernel, self.task, old + grow) != old + grow:
            return 0
        if self.top + self.top_size != old:  # someone else moved the break: start a new top there
            if self.top_size >= MINSIZE:
                self._free_chunk(self.top, self.top_size)
            self.top, self.top_size = old, 0
        self.top_size += grow
        return grow

    def _free_chunk(self, chunk: int, size: int) -> None:
        """Insert a free chunk, merging with free neighbours and with the top."""
        i = bisect.bisect_left(self.free_chunks, (chunk, 0))
        if i < len(self.free_chunks) and self.free_chunks[i][0] == chunk + size:
            size += self.free_chunks.pop(i)[1]
        if i > 0 and sum(self.free_chunks[i - 1]) == chunk:
            chunk, prev = self.free_chunks.pop(i - 1)
            size += prev
        if chunk + size == self.top:
            self.top, self.top_size = chunk, self.top_size + size
            return
        bisect.insort(self.free_chunks, (chunk, size))

    def _systrim(self) -> int:
        """Give the top's excess back with brk; returns the bytes trimmed."""
        extra = (self.top_size - DEFAULT_TOP_PAD - MINSIZE - 1) & ~(PAGE_SIZE - 1)
        mm = self.task.mm
        if extra <= 0 or self.top + self.top_size != mm.brk:
            return 0
        self.kernel.syscalls["brk"] += 1
        do_brk(self.kernel, self.task, mm.brk - extra)
        self.top_size -= extra
        return extra
