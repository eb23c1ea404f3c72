"""A user-space malloc on the model's system calls, following glibc 2.36's ptmalloc2 main arena.

The paths are glibc's (malloc/malloc.c):

- chunk sizes: ``request2size`` = max(MINSIZE 32, (n + SIZE_SZ 8 + 15) & ~15),
- the first call allocates the tcache (``tcache_init``: a 0x290-byte chunk,
  zeroed), so the heap starts at brk(+132 KiB),
- ``__libc_malloc`` returns a tcache chunk of exactly that size if it has one;
  ``_int_malloc`` tries a fastbin (chunks <= 128 bytes), then the free chunks
  (best fit, split), then the top chunk, and only then ``sysmalloc``, which
  mmaps the request on its own when nb >= mp_.mmap_threshold (M_MMAP_THRESHOLD
  128 KiB) and otherwise grows the top with brk(nb + M_TOP_PAD 128 KiB +
  MINSIZE - top, rounded to pages), falling back to mmap when brk fails: so a
  first malloc(131072) is carved from the 132 KiB heap, not mmapped,
- ``free`` of a chunk from mmap munmaps it; if its ``chunksize_nomask`` (size
  with the IS_MMAPPED bit) is above the threshold and at most
  DEFAULT_MMAP_THRESHOLD_MAX 32 MiB the threshold becomes its size and
  M_TRIM_THRESHOLD twice that (the dynamic threshold, in ``__libc_free``),
- ``_int_free`` puts a chunk in the tcache (up to 7 per size, sizes up to
  1040) or a fastbin, where it stays in use and is never merged; any other
  chunk is merged with free neighbours and the top, and only when the merged
  chunk is at least FASTBIN_CONSOLIDATION_THRESHOLD 64 KiB are the fastbins
  consolidated and the top trimmed (``systrim``) if it exceeds the trim threshold,
- ``calloc`` skips the memset for mmapped chunks and for the part of a chunk
  carved from a top beyond the highest break the heap ever had (fresh pages),
- ``realloc`` of an mmapped chunk is ``mremap_chunk`` (mremap with
  MREMAP_MAYMOVE); a heap chunk grows into the top or a free neighbour, else
  is malloc-copy-freed (``_int_realloc``).

Where glibc writes its own bookkeeping into the heap (the tcache block, chunk
size fields, the top's header, tcache and free-list links, footers) the model
stores to that word too (``_store``), so the pages those writes fault in are
the ones Linux counts.

Every malloc and free leaves a ``malloc`` decision in the kernel's decision
log (``k.decisions``) with the numbers it compared, and counts the brk, mmap,
mremap and munmap calls it makes in ``k.syscalls``.

Where it simplifies: one address-ordered list with best fit stands for the
unsorted, small and large bins (the chunk reused can differ from glibc's when
several fit); bin list links of neighbouring free chunks are not written; the
tcache is not refilled from fastbins and small bins; one arena (no threads).
"""

from __future__ import annotations

import bisect

from model.mm.mmap import (MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, SyscallError, do_brk, do_mmap,
                           do_mremap, do_munmap)
from model.x86.pte import PAGE_SIZE, Access

SIZE_SZ = 8
MALLOC_ALIGNMENT = 16
MINSIZE = 32
IS_MMAPPED = 0x2
DEFAULT_MMAP_THRESHOLD = 128 << 10
DEFAULT_MMAP_THRESHOLD_MAX = 32 << 20  # 4 * 1024 * 1024 * sizeof(long)
DEFAULT_TRIM_THRESHOLD = 128 << 10
DEFAULT_TOP_PAD = 128 << 10
FASTBIN_CONSOLIDATION_THRESHOLD = 64 << 10
DEFAULT_MXFAST = 64 * SIZE_SZ // 4  # 128: the largest chunk a fastbin takes
TCACHE_MAX_BINS = 64
TCACHE_FILL_COUNT = 7
TCACHE_STRUCT = 2 * TCACHE_MAX_BINS + 8 * TCACHE_MAX_BINS  # tcache_perthread_struct: counts[64], entries[64]


def request2size(n: int) -> int:
    return max(MINSIZE, (n + SIZE_SZ + MALLOC_ALIGNMENT - 1) & ~(MALLOC_ALIGNMENT - 1))


def csize2tidx(size: int) -> int:
    return (size - MINSIZE + MALLOC_ALIGNMENT - 1) // MALLOC_ALIGNMENT


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
        self.sbrk_base = 0  # where the heap began (mp_.sbrk_base)
        self.max_system_mem = 0  # the largest the brk heap ever was (av->max_system_mem)
        self.system_mem = 0
        self.tcache = 0  # user pointer of the tcache_perthread_struct, 0 before tcache_init
        self.tcache_bins: dict[int, list[int]] = {}  # chunk size -> chunks (last in, first out)
        self.fastbins: dict[int, list[int]] = {}
        self.free_chunks: list[tuple[int, int]] = []  # (chunk address, size), address order
        self.chunks: dict[int, tuple[int, int, bool]] = {}  # user pointer -> (chunk, size, mmapped)
        self.n_mmaps = 0

    def __deepcopy__(self, memo):
        """fork: the child gets an identical heap state (the kernel is shared, not copied)."""
        new = Malloc.__new__(Malloc)
        new.__dict__.update(self.__dict__)
        new.tcache_bins = {size: list(b) for size, b in self.tcache_bins.items()}
        new.fastbins = {size: list(b) for size, b in self.fastbins.items()}
        new.free_chunks = list(self.free_chunks)
        new.chunks = dict(self.chunks)
        return new

    # --- allocation ---------------------------------------------------------

    def malloc(self, n: int) -> int:
        """__libc_malloc: the tcache, else _int_malloc.  Returns the pointer, or 0 (NULL)."""
        if n < 0 or not self._tcache_init():
            return 0
        nb = request2size(n)
        why = {"n": n, "nb": nb, "threshold": self.mmap_threshold}
        cached = self.tcache_bins.get(nb)
        if cached:
            chunk = cached.pop()
            self._tcache_store(nb)
            self._store(chunk + 3 * SIZE_SZ)  # e->key = 0
            self._decide("tcache", why)
            return self._in_use(chunk, nb, False)
        return self._int_malloc(n, why)

    def calloc(self, count: int, size: int) -> int:
        """__libc_calloc: _int_malloc + memset, except where the memory is known fresh: an mmapped chunk,
        or the part of a chunk carved from the top beyond the highest break the heap ever had."""
        if not self._tcache_init():
            return 0
        n = count * size
        oldtop = self.top
        oldtopsize = max(self.top_size, self.sbrk_base + self.max_system_mem - self.top) if self.top else 0
        ptr = self._int_malloc(n, {"n": n, "nb": request2size(n), "threshold": self.mmap_threshold})
        if not ptr:
            return 0
        chunk, csize, mmapped = self.chunks[ptr]
        if mmapped:
            return ptr
        if chunk == oldtop and csize > oldtopsize:
            csize = oldtopsize
        self.touch(ptr, max(csize - SIZE_SZ, 0))
        return ptr

    def realloc(self, ptr: int, n: int) -> int:
        """__libc_realloc: mremap_chunk for an mmapped chunk, _int_realloc for a heap chunk."""
        if not ptr:
            return self.malloc(n)
        if n == 0:
            self.free(ptr)
            return 0
        chunk, size, mmapped = self.chunks[ptr]
        nb = request2size(n)
        if mmapped:
            return self._mremap_chunk(ptr, chunk, size, nb, n)
        return self._int_realloc(ptr, chunk, size, nb, n)

    def free(self, ptr: int) -> None:
        """__libc_free."""
        if not ptr:
            return
        chunk, size, mmapped = self.chunks.pop(ptr)
        if mmapped:
            why = {"size": size, "threshold": self.mmap_threshold}
            if self.mmap_threshold < size | IS_MMAPPED <= DEFAULT_MMAP_THRESHOLD_MAX:  # chunksize_nomask
                self.mmap_threshold = size  # the dynamic threshold
                self.trim_threshold = 2 * size
            self._decide("munmap", why, new_threshold=self.mmap_threshold)
            self._munmap_chunk(chunk, size)
            return
        self._int_free(chunk, size)

    def _munmap_chunk(self, chunk: int, size: int) -> None:
        self.kernel.syscalls["munmap"] += 1
        do_munmap(self.kernel, self.task, chunk, size)
        self.n_mmaps -= 1

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

    # --- _int_malloc and its helpers ---------------------------------------------

    def _int_malloc(self, n: int, why: dict) -> int:
        nb = request2size(n)
        fast = self.fastbins.get(nb)
        if fast:
            chunk = fast.pop()
            self._decide("heap", why, chunk_size=nb, bin="fastbin")
            return self._in_use(chunk, nb, False)
        if nb >= 1024 and self._have_fastchunks():  # a large request consolidates first
            self._malloc_consolidate()
        while True:
            i = self._best_fit(nb)
            if i is not None:
                chunk, size = self.free_chunks.pop(i)
                self._decide("heap", why, chunk_size=size)
                if size - nb >= MINSIZE:
                    self._link_free(chunk + nb, size - nb)
                    size = nb
                else:
                    self._store(chunk + size + SIZE_SZ)  # set_inuse_bit_at_offset
                return self._in_use(chunk, size, False)
            if self.top and self.top_size >= nb + MINSIZE:
                self._decide("heap", why, top=self.top_size)
                return self._from_top(nb)
            if not self._have_fastchunks():
                break
            self._malloc_consolidate()
        return self._sysmalloc(nb, {**why, "top": self.top_size})

    def _sysmalloc(self, nb: int, why: dict) -> int:
        """mmap the chunk when nb reaches the threshold, else grow the top with brk (mmap if brk fails)."""
        if nb >= self.mmap_threshold:
            return self._mmap_chunk(nb, "mmap", why)
        grow = self._grow_top(nb)
        if not grow:
            return self._mmap_chunk(nb, "mmap-fallback", why)
        self._decide("brk", why, grow=grow)
        return self._from_top(nb)

    def _grow_top(self, nb: int) -> int:
        """brk(+size) for the top (the main-arena half of sysmalloc); the increment, or 0 if refused."""
        mm = self.task.mm
        old = mm.brk
        contiguous = self.top and self.top + self.top_size == old
        grow = _page_align(nb + DEFAULT_TOP_PAD + MINSIZE - (self.top_size if contiguous else 0))
        self.kernel.syscalls["brk"] += 1
        if do_brk(self.kernel, self.task, old + grow) != old + grow:
            return 0
        if not self.sbrk_base:
            self.sbrk_base = old
        self.system_mem += grow
        self.max_system_mem = max(self.max_system_mem, self.system_mem)
        if not contiguous:  # the first time, or someone else moved the break: a new top there
            if self.top and self.top_size >= MINSIZE:
                self._int_free(self.top, self.top_size)
            self.top, self.top_size = old, 0
        self.top_size += grow
        self._store(self.top + SIZE_SZ)  # set_head (old_top, ...)
        return grow

    def _from_top(self, nb: int) -> int:
        chunk = self.top
        self.top += nb
        self.top_size -= nb
        self._store(self.top + SIZE_SZ)  # set_head (remainder, ...): the new top's header
        return self._in_use(chunk, nb, False)

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
        return self._in_use(chunk, size, True)

    def _in_use(self, chunk: int, size: int, mmapped: bool) -> int:
        """Hand the chunk out: set_head writes its size field."""
        ptr = chunk + 2 * SIZE_SZ
        self.chunks[ptr] = (chunk, size, mmapped)
        self._store(chunk + SIZE_SZ)
        return ptr

    def _best_fit(self, nb: int) -> int | None:
        best = None
        for i, (_, size) in enumerate(self.free_chunks):
            if size >= nb and (best is None or size < self.free_chunks[best][1]):
                best = i
        return best

    # --- tcache -------------------------------------------------------------------

    def _tcache_init(self) -> bool:
        """MAYBE_INIT_TCACHE: the first call takes a chunk for tcache_perthread_struct and zeroes it."""
        if self.tcache:
            return True
        ptr = self._int_malloc(TCACHE_STRUCT, {"n": TCACHE_STRUCT, "nb": request2size(TCACHE_STRUCT),
                                               "threshold": self.mmap_threshold, "tcache": True})
        if not ptr:
            return False
        self.tcache = ptr
        return self.touch(ptr, TCACHE_STRUCT)

    def _tcache_store(self, size: int) -> None:
        """tcache->counts[idx] and tcache->entries[idx] change."""
        idx = csize2tidx(size)
        self._store(self.tcache + 2 * idx)
        self._store(self.tcache + 2 * TCACHE_MAX_BINS + 8 * idx)

    # --- _int_free ------------------------------------------------------------------

    def _int_free(self, chunk: int, size: int) -> None:
        why = {"size": size, "trim_threshold": self.trim_threshold}
        if self.tcache and csize2tidx(size) < TCACHE_MAX_BINS:
            cached = self.tcache_bins.setdefault(size, [])
            if len(cached) < TCACHE_FILL_COUNT:
                cached.append(chunk)
                self._store(chunk + 2 * SIZE_SZ)  # e->next
                self._store(chunk + 3 * SIZE_SZ)  # e->key
                self._tcache_store(size)
                self._decide("tcache-free", why, count=len(cached))
                return
        if size <= DEFAULT_MXFAST:
            self.fastbins.setdefault(size, []).append(chunk)
            self._store(chunk + 2 * SIZE_SZ)  # p->fd
            self._decide("fastbin-free", why)
            return
        merged = self._free_chunk(chunk, size)
        trim = 0
        if merged >= FASTBIN_CONSOLIDATION_THRESHOLD:
            self._malloc_consolidate()
            if self.top_size >= self.trim_threshold:
                trim = self._systrim()
        self._decide("trim" if trim else "free", why, merged=merged, top=self.top_size + trim, trim=trim)

    def _have_fastchunks(self) -> bool:
        return any(self.fastbins.values())

    def _malloc_consolidate(self) -> None:
        """Merge every fastbin chunk with its free neighbours and the top."""
        chunks = sorted((c, size) for size, b in self.fastbins.items() for c in b)
        self.fastbins = {}
        for chunk, size in chunks:
            self._free_chunk(chunk, size)

    def _free_chunk(self, chunk: int, size: int) -> int:
        """Merge a chunk with free neighbours and the top; returns the merged size."""
        i = bisect.bisect_left(self.free_chunks, (chunk, 0))
        if i > 0 and sum(self.free_chunks[i - 1]) == chunk:  # consolidate backward
            chunk, prev = self.free_chunks.pop(i - 1)
            size += prev
            i -= 1
        if chunk + size == self.top:  # into the top
            self.top, self.top_size = chunk, self.top_size + size
            self._store(chunk + SIZE_SZ)
            return self.top_size
        if i < len(self.free_chunks) and self.free_chunks[i][0] == chunk + size:  # consolidate forward
            size += self.free_chunks.pop(i)[1]
        else:
            self._store(chunk + size + SIZE_SZ)  # clear_inuse_bit_at_offset (nextchunk, 0)
        self._link_free(chunk, size)
        return size

    def _link_free(self, chunk: int, size: int) -> None:
        """A free chunk in the bins: its header, its fd/bk links and its footer are written."""
        bisect.insort(self.free_chunks, (chunk, size))
        self._store(chunk + SIZE_SZ)
        self._store(chunk + 2 * SIZE_SZ)
        self._store(chunk + size)  # set_foot: the next chunk's prev_size

    def _systrim(self) -> int:
        """Give the top's excess back with brk; returns the bytes trimmed."""
        top_area = self.top_size - MINSIZE - 1
        if top_area <= DEFAULT_TOP_PAD:
            return 0
        extra = (top_area - DEFAULT_TOP_PAD) & ~(PAGE_SIZE - 1)
        mm = self.task.mm
        if not extra or self.top + self.top_size != mm.brk:
            return 0
        self.kernel.syscalls["brk"] += 1
        do_brk(self.kernel, self.task, mm.brk - extra)
        self.top_size -= extra
        self.system_mem -= extra
        self._store(self.top + SIZE_SZ)
        return extra

    # --- realloc ----------------------------------------------------------------------

    def _mremap_chunk(self, ptr: int, chunk: int, size: int, nb: int, n: int) -> int:
        """mremap(MREMAP_MAYMOVE) to page_align(nb + SIZE_SZ); the same number of pages is a no-op."""
        new_size = _page_align(nb + SIZE_SZ)
        why = {"n": n, "nb": nb, "size": size, "new_size": new_size}
        if new_size == size:
            self._decide("mremap", why, moved=False)
            return ptr
        self.kernel.syscalls["mremap"] += 1
        try:
            new = do_mremap(self.kernel, self.task, chunk, size, new_size)
        except SyscallError:
            if size - SIZE_SZ >= nb:
                return ptr
            new_ptr = self.malloc(n)
            if new_ptr:
                self.copy(new_ptr, ptr, size - 2 * SIZE_SZ)
                del self.chunks[ptr]
                self._munmap_chunk(chunk, size)
            return new_ptr
        self._decide("mremap", why, moved=new != chunk)
        del self.chunks[ptr]
        return self._in_use(new, new_size, True)

    def _int_realloc(self, ptr: int, chunk: int, size: int, nb: int, n: int) -> int:
        nxt = chunk + size
        newsize = size
        if size < nb:
            if nxt == self.top and size + self.top_size >= nb + MINSIZE:  # expand into the top
                self.top += nb - size
                self.top_size -= nb - size
                self._store(self.top + SIZE_SZ)
                self.chunks[ptr] = (chunk, nb, False)
                return ptr
            i = bisect.bisect_left(self.free_chunks, (nxt, 0))
            if i < len(self.free_chunks) and self.free_chunks[i][0] == nxt and size + self.free_chunks[i][1] >= nb:
                newsize += self.free_chunks.pop(i)[1]  # expand into the free chunk after it
            else:
                new = self._int_malloc(nb - MALLOC_ALIGNMENT + 1, {"n": n, "nb": nb,
                                                                  "threshold": self.mmap_threshold})
                if not new:
                    return 0
                new_chunk, new_size, new_mmapped = self.chunks[new]
                if new_chunk == nxt and not new_mmapped:  # the next chunk: no copy
                    del self.chunks[new]
                    newsize += new_size
                else:
                    self.copy(new, ptr, size - SIZE_SZ)
                    del self.chunks[ptr]
                    self._int_free(chunk, size)
                    return new
        if newsize - nb >= MINSIZE:  # split off the remainder and free it
            self.chunks[ptr] = (chunk, nb, False)
            self._store(chunk + nb + SIZE_SZ)
            self._int_free(chunk + nb, newsize - nb)
        else:
            self.chunks[ptr] = (chunk, newsize, False)
            self._store(chunk + newsize + SIZE_SZ)
        return ptr

    # --- internals -------------------------------------------------------------

    def _store(self, addr: int) -> None:
        """glibc writes a word of its own bookkeeping at ``addr`` (faulting its page in, as the CPU would)."""
        if self.task.alive:
            self.kernel.access(self.task, addr, Access.WRITE, stamp=False)

    def _decide(self, outcome: str, why: dict, **more) -> None:
        self.kernel.decisions.record("malloc", outcome, pid=self.task.pid, name=self.task.name, **why, **more)
