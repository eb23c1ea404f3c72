"""Files on a small simulated disk and the page cache in front of them (Linux mm/filemap.c).

Every file has an inode number and a size; its contents are a deterministic
pattern (each 8-byte word holds ``inode << 40 | byte offset``) until a page is
written back, after which the disk keeps the written bytes.  Reading a page
that is not cached is a disk read: a major fault when it happens in a page
fault, which also reads ahead around it (``read_ahead_kb`` of the disk, 128 KiB
by default) so that the next faults find their pages cached, and fault-around
(mm/memory.c ``do_fault_around``) maps up to 16 cached pages per fault.  The first access to a file also reads its inode-table block through the
block device's own page cache: those pages are what /proc/meminfo calls
Buffers.
"""

from __future__ import annotations

import numpy as np

from model.errors import UserError
from model.x86.pte import PAGE_SHIFT, PAGE_SIZE

INODES_PER_BLOCK = 16  # a 4 KiB inode-table block holds 16 inodes of 256 bytes (ext4 default)
VM_READAHEAD_KB = 128  # include/linux/mm.h VM_READAHEAD_PAGES: the default read_ahead_kb of a block device


class SimFile:
    """A regular file: path, inode number, size in bytes and its page cache."""

    def __init__(self, path: str, ino: int, size: int) -> None:
        self.path = path
        self.ino = ino
        self.size = size
        self.mapping = AddressSpace("file", self)
        self.ra = RaState()

    @property
    def nr_pages(self) -> int:
        return (self.size + PAGE_SIZE - 1) >> PAGE_SHIFT


class RaState:
    """struct file_ra_state: the current readahead window [start, start + size), whose last
    ``async_size`` pages begin with the PG_readahead page (one per file here: the model has no
    open file descriptions)."""

    def __init__(self) -> None:
        self.start = self.size = self.async_size = 0


class AddressSpace:
    """struct address_space: the cached pages of one object, by page index.

    ``kind`` is file, shmem (MAP_SHARED anonymous memory, a tmpfs object),
    buffer (the block device) or hugetlb.  A shmem page that was swapped out
    leaves its swap offset in ``swapped`` (Linux keeps a swap entry in the
    mapping's xarray).
    """

    def __init__(self, kind: str, host=None) -> None:
        self.kind = kind
        self.host = host
        self.pages: dict[int, object] = {}
        self.swapped: dict[int, int] = {}
        self.readahead: set[int] = set()  # indices of cached pages with PG_readahead set
        self.users = 0  # VMAs mapping a shmem or hugetlb object; it is freed with the last one


class Disk:
    """The simulated disk: a directory of files plus the block device's page cache."""

    def __init__(self) -> None:
        self.files: dict[str, SimFile] = {}
        self.blocks: dict[tuple[int, int], bytes] = {}  # (ino, page index) -> written-back contents
        self.bdev = AddressSpace("buffer")
        self.next_ino = 12  # ext4's first non-reserved inode is 11 (lost+found)
        self.read_ahead_kb = VM_READAHEAD_KB  # /sys/block/DEV/queue/read_ahead_kb
        self.reads = 0
        self.writes = 0

    def create(self, path: str, size: int) -> SimFile:
        if path in self.files:
            raise UserError(f"file {path}: already exists")
        if size < 0:
            raise UserError(f"file {path}: size {size} must be >= 0")
        f = SimFile(path, self.next_ino, size)
        self.next_ino += 1
        self.files[path] = f
        return f

    def lookup(self, path: str) -> SimFile:
        try:
            return self.files[path]
        except KeyError:
            raise UserError(f"file {path}: no such file on the simulated disk (create it with `file`)") from None

    def read_page(self, f: SimFile, index: int) -> bytes:
        """One page from the disk (zeros past end of file, as a hole reads)."""
        self.reads += 1
        data = self.blocks.get((f.ino, index))
        if data is not None:
            return data
        start = index << PAGE_SHIFT
        words = np.arange(start, start + PAGE_SIZE, 8, dtype=np.uint64) | np.uint64(f.ino << 40)
        valid = max(0, min(PAGE_SIZE, f.size - start))
        raw = bytearray(words.astype("<u8").tobytes())
        raw[valid:] = bytes(PAGE_SIZE - valid)
        return bytes(raw)

    def write_page(self, f: SimFile, index: int, data: bytes) -> None:
        self.writes += 1
        self.blocks[(f.ino, index)] = data

    @staticmethod
    def inode_block(f: SimFile) -> int:
        """Index of the inode-table block holding ``f``'s inode."""
        return f.ino // INODES_PER_BLOCK


# --- the page cache (mm/filemap.c, mm/shmem.c, fs/buffer.c) -------------------------

def open_file(k, f: SimFile) -> None:
    """Path lookup and inode read: a dentry object and the inode-table block (Buffers)."""
    if getattr(f, "dentry_addr", 0) == 0:
        f.dentry_addr = k.caches["dentry"].alloc()
    block = Disk.inode_block(f)
    bdev = k.disk.bdev
    if block not in bdev.pages:
        page = k.alloc_page("buffer", mapping=bdev, index=block, zero=False)
        k.mem.write(page.pfn << PAGE_SHIFT, bytes(PAGE_SIZE))
        k.disk.reads += 1
        bdev.pages[block] = page
        k.vmstat["pgpgin"] += PAGE_SIZE >> 10


def filemap_fault(k, mapping: AddressSpace, index: int, *, mmap: bool = False):
    """The page at ``index`` of ``mapping``, read or created as needed: (page, major).

    File pages come from the disk when not cached (a major fault); shmem pages
    are created zeroed, or read back from swap (major) when swapped out.  For a
    page fault on a mapping (``mmap``) a miss reads around the page
    (``do_sync_mmap_readahead``) and a hit on the PG_readahead page reads the
    next window (``do_async_mmap_readahead``), as mm/filemap.c filemap_fault().
    """
    page = mapping.pages.get(index)
    if page is not None:
        if mmap and index in mapping.readahead:
            async_readahead(k, mapping.host, index)
        return page, False
    if mapping.kind == "shmem":
        offset = mapping.swapped.pop(index, None)
        page = k.alloc_page("shmem", mapping=mapping, index=index, zero=offset is None)
        mapping.pages[index] = page
        if offset is None:
            return page, False
        k.mem.write(page.pfn << PAGE_SHIFT, k.swap.read(offset))
        k.swap.put(offset)
        k.vmstat["pswpin"] += 1
        k.vmstat["pgpgin"] += PAGE_SIZE >> 10  # swap I/O is block I/O too (submit_bio)
        return page, True
    f = mapping.host
    open_file(k, f)
    ra = ra_pages(k)
    if mmap and ra:  # mmap read-around: the window centred on the fault, a quarter of it asynchronous
        f.ra.start, f.ra.size, f.ra.async_size = max(0, index - ra // 2), ra, ra // 4
        read_window(k, f)
    if index not in mapping.pages:  # no readahead, or it stopped short for want of memory
        _read_page(k, f, index)
    return mapping.pages[index], True


def ra_pages(k) -> int:
    """The readahead window in pages (bdi->ra_pages)."""
    return k.disk.read_ahead_kb * 1024 // PAGE_SIZE


def _read_page(k, f: SimFile, index: int):
    page = k.alloc_page("file", mapping=f.mapping, index=index, zero=False)
    k.mem.write(page.pfn << PAGE_SHIFT, k.disk.read_page(f, index))
    k.vmstat["pgpgin"] += PAGE_SIZE >> 10
    f.mapping.pages[index] = page
    f.mapping.readahead.discard(index)
    return page


def read_window(k, f: SimFile) -> None:
    """page_cache_ra_unbounded(): read the uncached pages of the window f.ra, up to the end of the file,
    and mark the first page of its asynchronous part PG_readahead.  Readahead never reclaims: it stops
    when an allocation would take free memory below the low watermark (its GFP_NORETRY allocations)."""
    ra = f.ra
    mark = ra.start + ra.size - ra.async_size
    for index in range(ra.start, min(ra.start + ra.size, f.nr_pages)):
        if index in f.mapping.pages:
            continue
        if k.buddy.nr_free_pages <= k.buddy.watermarks.low + 8:
            return
        _read_page(k, f, index)
        if index == mark:
            f.mapping.readahead.add(index)


def async_readahead(k, f: SimFile, index: int) -> None:
    """page_cache_async_ra(): the PG_readahead page was reached: clear it and read the next window,
    ramped up by get_next_ra_size() when the hit is where the window expected it."""
    f.mapping.readahead.discard(index)
    ra, max_pages = f.ra, ra_pages(k)
    if not max_pages:
        return
    if index == ra.start + ra.size - ra.async_size:
        ra.start += ra.size
        ra.size = max(ra.size, next_ra_size(ra.size, max_pages))
    else:  # a marked page outside the current window: restart from the first page not cached
        start = next((i for i in range(index + 1, index + 1 + max_pages) if i not in f.mapping.pages),
                     index + 1 + max_pages)  # page_cache_next_miss()
        if start - index > max_pages:
            return
        ra.start, ra.size = start, next_ra_size(start - index + max_pages, max_pages)
    ra.async_size = ra.size
    read_window(k, f)


def sync_readahead(k, f: SimFile, index: int, req: int) -> None:
    """page_cache_sync_ra() for read(2) missing page ``index`` with ``req`` pages left to read: from the
    start of the file, or continuing the window, the first window is get_init_ra_size(req); a read
    elsewhere reads just its pages (random I/O).  A request larger than read_ahead_kb is read whole."""
    max_pages = ra_pages(k)
    if not max_pages:
        return
    ra = f.ra
    if index and index != ra.start + ra.size and req <= max_pages:
        ra.start, ra.size, ra.async_size = index, req, 0
    else:
        ra.start, ra.size = index, init_ra_size(req, max(max_pages, req))
        ra.async_size = ra.size - req if ra.size > req else ra.size
    read_window(k, f)


def init_ra_size(req: int, max_pages: int) -> int:
    """mm/readahead.c get_init_ra_size(): the request rounded up to a power of two, times 4 when small,
    times 2 when middling, else the maximum."""
    size = 1 << (req - 1).bit_length()
    if size <= max_pages // 32:
        return 4 * size
    if size <= max_pages // 4:
        return 2 * size
    return max_pages


def next_ra_size(cur: int, max_pages: int) -> int:
    """mm/readahead.c get_next_ra_size(): quadruple a small window, double a middling one, else the maximum."""
    if cur < max_pages // 16:
        return 4 * cur
    if cur <= max_pages // 2:
        return 2 * cur
    return max_pages


def filemap_map_pages(k, task, vma, va: int, first: int, last: int) -> bool:
    """Map the cached pages of indices [first, last] that have no PTE yet (fault-around), skipping
    PG_readahead pages so their fault starts the next readahead; True if the page at ``va`` was mapped."""
    mm = task.mm
    mapping = vma.mapping if vma.mapping is not None else vma.file.mapping
    if vma.file is not None:
        last = min(last, vma.file.nr_pages - 1)
    index = vma.file_index(va)
    writable = vma.shared and vma.writable and mapping.kind == "shmem"
    hit = False
    for i in range(first, last + 1):
        page = mapping.pages.get(i)
        if page is None or i in mapping.readahead:
            continue
        addr = va + (i - index) * PAGE_SIZE
        if mm.pt.get_pte(addr):
            continue
        k.set_pte(mm, addr, page, vma, writable=writable, dirty=False)
        k.page_add_rmap(page, mm, addr)
        hit |= addr == va
    return hit


def mark_page_accessed(k, page) -> None:
    """Second reference to an inactive page promotes it to the active list (mm/swap.c)."""
    from model.mm.vmscan import activate_page
    if page.referenced and page.lru is not None and page.lru.startswith("inactive"):
        activate_page(k, page)
        page.referenced = False
    else:
        page.referenced = True


def file_read(k, task, f: SimFile, offset: int, length: int) -> int:
    """read(2) through the page cache; returns the bytes read (short at end of file)."""
    from model.mm.memory import FAULT_RESERVE
    end = min(offset + length, f.size)
    done = 0
    first, last = offset >> PAGE_SHIFT, (end + PAGE_SIZE - 1) >> PAGE_SHIFT
    for index in range(first, last):
        if not k.ensure_free(FAULT_RESERVE, task):
            break
        if index not in f.mapping.pages:
            sync_readahead(k, f, index, last - index)
        elif index in f.mapping.readahead:
            async_readahead(k, f, index)
        page, _ = filemap_fault(k, f.mapping, index)
        mark_page_accessed(k, page)
        done = min(end, (index + 1) << PAGE_SHIFT) - offset
    return max(done, 0)


def file_write(k, task, f: SimFile, offset: int, length: int) -> int:
    """write(2): copy into page-cache pages and mark them dirty; the file grows as needed."""
    from model.mm.memory import FAULT_RESERVE
    end = offset + length
    done = 0
    for index in range(offset >> PAGE_SHIFT, (end + PAGE_SIZE - 1) >> PAGE_SHIFT):
        if not k.ensure_free(FAULT_RESERVE, task):
            break
        f.size = max(f.size, min(end, (index + 1) << PAGE_SHIFT))
        page, _ = filemap_fault(k, f.mapping, index)
        lo = max(offset, index << PAGE_SHIFT)
        hi = min(end, (index + 1) << PAGE_SHIFT)
        k.stamp_seq += 1
        k.mem.write(page.pfn << PAGE_SHIFT | (lo & (PAGE_SIZE - 1)),
                    (k.stamp_seq.to_bytes(8, "little") * ((hi - lo) // 8 + 1))[:hi - lo])
        page.dirty = True
        mark_page_accessed(k, page)
        done = hi - offset
    return done


def page_mkclean(k, page) -> bool:
    """Write-protect and clean every PTE of a file page; True if any was dirty (mm/rmap.c)."""
    from model.x86.pte import RW, D
    dirty = False
    for mm, va in list(page.rmap):
        leaf = mm.pt.lookup(va)
        if leaf is None or not leaf.value & (D | RW):
            continue
        dirty |= bool(leaf.value & D)
        k.mem.write64(leaf.entry_addr, leaf.value & ~(D | RW))
        k.flush_tlb_page(mm, va)
    return dirty


def writeback_page(k, page) -> None:
    """Write a dirty file page to the disk (mm/page-writeback.c, synchronous here)."""
    if page_mkclean(k, page):
        page.dirty = True
    if not page.dirty or page.mapping.kind != "file":
        return
    k.disk.write_page(page.mapping.host, page.index, k.mem.read_frame(page.pfn))
    page.dirty = False
    k.vmstat["pgpgout"] += PAGE_SIZE >> 10
    k.vmstat["nr_written"] += 1


def truncate_mapping(k, mapping: AddressSpace) -> None:
    """The last mapping of a shmem or hugetlb object is gone: free its pages and swap slots."""
    for page in list(mapping.pages.values()):
        k.free_page(page)
    for offset in mapping.swapped.values():
        k.swap.put(offset)
    mapping.pages.clear()
    mapping.swapped.clear()


def sync(k) -> int:
    """sync(2): write back every dirty file page; returns how many were written."""
    written = 0
    for f in k.disk.files.values():
        for page in list(f.mapping.pages.values()):
            before = k.vmstat["nr_written"]
            writeback_page(k, page)
            written += k.vmstat["nr_written"] - before
    return written
