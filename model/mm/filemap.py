"""Files on a small simulated disk and the page cache in front of them (Linux mm/filemap.c).

Every file has an inode number and a size; its contents are a deterministic
pattern (each 8-byte word holds ``inode << 40 | byte offset``) until a page is
written back, after which the disk keeps the written bytes.  Reading a page
that is not cached is a disk read: a major fault when it happens in a page
fault.  The first access to a file also reads its inode-table block through the
block device's own page cache: those pages are what /proc/meminfo calls
Buffers.
"""

from __future__ import annotations

import numpy as np

from model.errors import UserError
from model.x86.pte import PAGE_SHIFT, PAGE_SIZE

INODES_PER_BLOCK = 16  # a 4 KiB inode-table block holds 16 inodes of 256 bytes (ext4 default)


class SimFile:
    """A regular file: path, inode number, size in bytes and its page cache."""

    def __init__(self, path: str, ino: int, size: int) -> None:
        self.path = path
        self.ino = ino
        self.size = size
        self.mapping = AddressSpace("file", self)

    @property
    def nr_pages(self) -> int:
        return (self.size + PAGE_SIZE - 1) >> PAGE_SHIFT


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
        self.users = 0  # VMAs mapping a shmem or hugetlb object; it is freed with the last one


class Disk:
    """The simulated disk: a directory of files plus the block device's page cache."""

    def __init__(self) -> None:
        self.files: dict[str, SimFile] = {}
        self.blocks: dict[tuple[int, int], bytes] = {}  # (ino, page index) -> written-back contents
        self.bdev = AddressSpace("buffer")
        self.next_ino = 12  # ext4's first non-reserved inode is 11 (lost+found)
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


def filemap_fault(k, mapping: AddressSpace, index: int):
    """The page at ``index`` of ``mapping``, read or created as needed: (page, major).

    File pages come from the disk when not cached (a major fault); shmem pages
    are created zeroed, or read back from swap (major) when swapped out.
    """
    page = mapping.pages.get(index)
    if page is not None:
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
    page = k.alloc_page("file", mapping=mapping, index=index, zero=False)
    k.mem.write(page.pfn << PAGE_SHIFT, k.disk.read_page(f, index))
    k.vmstat["pgpgin"] += PAGE_SIZE >> 10
    mapping.pages[index] = page
    return page, True


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
    for index in range(offset >> PAGE_SHIFT, (end + PAGE_SIZE - 1) >> PAGE_SHIFT):
        if not k.ensure_free(FAULT_RESERVE, task):
            break
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
