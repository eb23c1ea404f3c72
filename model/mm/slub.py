"""A SLUB-flavoured slab allocator on the buddy, after Linux mm/slub.c and mm/slab_common.c.

A kmem cache hands out objects of one size carved from slabs: runs of
2^order pages from the buddy.  Objects are physical addresses, laid out from
the start of the slab at a stride of the cache's ``size``; ``kfree`` finds the
slab from the object's page, as ``virt_to_slab()`` does.

What is kept from SLUB: the kmalloc size classes and ``kmalloc_index()``,
``kmalloc_large()`` above 8 KiB, ``calculate_order()`` for the slab order, a
LIFO freelist per slab (objects first handed out in address order, as without
CONFIG_SLAB_FREELIST_RANDOM), one node's partial list, and ``min_partial``:
a slab that becomes empty stays on the partial list while fewer than
``min_partial`` slabs are there, otherwise it goes back to the buddy
(``__slab_free()``); ``shrink()`` frees every empty slab.

What is left out: per-CPU slabs and partial lists (every alloc and free takes
the slow path through the node), cache merging (as with ``slab_nomerge``, so
every cache shows in slabinfo), debug metadata, and the dma/cgroup/reclaimable
kmalloc variants.
"""

from __future__ import annotations

from collections import OrderedDict

from model.mm.page_alloc import MAX_ORDER, BadFree, BuddyAllocator
from model.x86.pte import PAGE_SHIFT, PAGE_SIZE

KMALLOC_MIN_SIZE = 8  # x86-64 has kmalloc-8
KMALLOC_SHIFT_HIGH = PAGE_SHIFT + 1
KMALLOC_MAX_CACHE_SIZE = 1 << KMALLOC_SHIFT_HIGH  # 8 KiB: larger requests go to kmalloc_large()
KMALLOC_MAX_SIZE = PAGE_SIZE << MAX_ORDER  # the largest block the buddy can give
ARCH_SLAB_MINALIGN = 8  # sizeof(void *): calculate_alignment() never goes below it
SLUB_MAX_ORDER = 3  # slub_max_order = PAGE_ALLOC_COSTLY_ORDER
MIN_PARTIAL, MAX_PARTIAL = 5, 10
NR_CPUS = 1  # the model kernel is uniprocessor
# calculate_order(): min_objects = 4 * (fls(nr_cpus) + 1)
SLUB_MIN_OBJECTS = 4 * (NR_CPUS.bit_length() + 1)

# kmalloc_info[] in mm/slab_common.c: index -> (object size, cache name).  Index
# n holds 2^n bytes, except the two non-power-of-two classes at 1 and 2.
KMALLOC_INFO = {
    1: (96, "kmalloc-96"), 2: (192, "kmalloc-192"),
    3: (8, "kmalloc-8"), 4: (16, "kmalloc-16"), 5: (32, "kmalloc-32"), 6: (64, "kmalloc-64"),
    7: (128, "kmalloc-128"), 8: (256, "kmalloc-256"), 9: (512, "kmalloc-512"),
    10: (1024, "kmalloc-1k"), 11: (2048, "kmalloc-2k"), 12: (4096, "kmalloc-4k"), 13: (8192, "kmalloc-8k"),
}


class SlabError(Exception):
    """Misuse of a kmem cache by the kernel model (destroying a busy cache,
    allocating from a destroyed one): a kernel bug, not user input."""


def get_order(size: int) -> int:
    """Smallest order whose block holds ``size`` bytes (include/asm-generic/getorder.h)."""
    return max(0, ((size - 1) >> PAGE_SHIFT).bit_length())


def kmalloc_index(size: int) -> int:
    """Index of the kmalloc cache serving ``size`` bytes (include/linux/slab.h ``__kmalloc_index()``)."""
    if size <= KMALLOC_MIN_SIZE:
        return 3
    if 64 < size <= 96:
        return 1
    if 128 < size <= 192:
        return 2
    return (size - 1).bit_length()


def calc_slab_order(size: int, min_order: int, max_order: int, fract_leftover: int) -> int:
    """First order from ``min_order`` whose slab wastes at most 1/fract_leftover (mm/slub.c)."""
    order = min_order
    while order <= max_order:
        slab_size = PAGE_SIZE << order
        if slab_size % size <= slab_size // fract_leftover:
            break
        order += 1
    return order


def calculate_order(size: int) -> int:
    """Slab order for objects of ``size`` bytes, as mm/slub.c ``calculate_order()``.

    Aim for at least SLUB_MIN_OBJECTS objects per slab, then take the smallest
    order up to SLUB_MAX_ORDER that wastes at most 1/16 of the slab, relaxing
    to 1/8, 1/4 and 1/2; objects too large for that get ``get_order(size)``.
    """
    max_objects = max((PAGE_SIZE << SLUB_MAX_ORDER) // size, 1)
    min_objects = min(SLUB_MIN_OBJECTS, max_objects)
    min_order = get_order(min_objects * size)
    fraction = 16
    while fraction > 1:
        order = calc_slab_order(size, min_order, SLUB_MAX_ORDER, fraction)
        if order <= SLUB_MAX_ORDER:
            return order
        fraction //= 2
    return get_order(size)


def _align(n: int, a: int) -> int:
    return (n + a - 1) & -a


class Slab:
    """One slab (``struct slab``): 2^order pages from ``pfn`` carved into objects."""

    __slots__ = ("cache", "pfn", "freelist", "allocated")

    def __init__(self, cache: KmemCache, pfn: int) -> None:
        base = pfn << PAGE_SHIFT
        self.cache = cache
        self.pfn = pfn
        # A stack: pop() hands out the lowest free address first on a new slab.
        self.freelist = [base + i * cache.size for i in reversed(range(cache.objects))]
        self.allocated: set[int] = set()


class KmemCache:
    """A cache of objects of one size (``struct kmem_cache``); create it with
    ``SlabAllocator.kmem_cache_create``.

    ``size`` is the object size rounded up to the alignment, ``object_size``
    what the creator asked for.  ``reclaimable`` is SLAB_RECLAIM_ACCOUNT: its
    pages count as SReclaimable in meminfo.
    """

    def __init__(self, allocator: SlabAllocator, name: str, size: int, align: int,
                 reclaimable: bool, is_kmalloc: bool = False) -> None:
        if size < 1 or size > KMALLOC_MAX_SIZE:
            raise ValueError(f"kmem_cache_create({name!r}): size {size} must be 1..{KMALLOC_MAX_SIZE}")
        if align < 1 or align & (align - 1) or align > PAGE_SIZE:
            raise ValueError(f"kmem_cache_create({name!r}): align {align} must be a power of two <= {PAGE_SIZE}")
        self._allocator = allocator
        self.name = name
        self.object_size = size
        self.align = max(align, ARCH_SLAB_MINALIGN)  # calculate_alignment()
        self.size = _align(_align(size, ARCH_SLAB_MINALIGN), self.align)  # calculate_sizes()
        self.order = calculate_order(self.size)
        self.objects = (PAGE_SIZE << self.order) // self.size
        # set_min_partial(s, ilog2(s->size) / 2), clamped to MIN_PARTIAL..MAX_PARTIAL
        self.min_partial = min(max((self.size.bit_length() - 1) // 2, MIN_PARTIAL), MAX_PARTIAL)
        self.reclaimable = reclaimable
        self.is_kmalloc = is_kmalloc
        self.destroyed = False
        # The node's partial list: allocation takes the head, a slab that was
        # full goes to the tail.  Full slabs are on no list, as in SLUB.
        self._partial: OrderedDict[Slab, None] = OrderedDict()
        self.nr_slabs = 0
        self.active_objs = 0

    def __repr__(self) -> str:
        return f"<KmemCache {self.name} size={self.size} active={self.active_objs}/{self.num_objs}>"

    # --- slabinfo figures -------------------------------------------------------

    @property
    def num_objs(self) -> int:
        return self.nr_slabs * self.objects

    @property
    def pages_per_slab(self) -> int:
        return 1 << self.order

    @property
    def nr_pages(self) -> int:
        """Pages held by this cache's slabs (what meminfo's Slab line counts)."""
        return self.nr_slabs << self.order

    @property
    def nr_partial(self) -> int:
        return len(self._partial)

    def slabinfo_line(self) -> str:
        """This cache's /proc/slabinfo line (mm/slab_common.c ``cache_show()``;
        SLUB has no tunables and reports every slab as active)."""
        return (f"{self.name:<17s} {self.active_objs:6d} {self.num_objs:6d} {self.size:6d} "
                f"{self.objects:4d} {self.pages_per_slab:4d} : tunables {0:4d} {0:4d} {0:4d}"
                f" : slabdata {self.nr_slabs:6d} {self.nr_slabs:6d} {0:6d}\n")

    # --- allocation ---------------------------------------------------------------

    def alloc(self) -> int | None:
        """Physical address of a free object (``kmem_cache_alloc()``), or None when
        the buddy has no block for a new slab (the caller reclaims and retries)."""
        if self.destroyed:
            raise SlabError(f"kmem_cache_alloc({self.name}): the cache was destroyed")
        if self._partial:
            slab = next(iter(self._partial))
        else:
            slab = self._new_slab()
            if slab is None:
                return None
            self._partial[slab] = None
        addr = slab.freelist.pop()
        slab.allocated.add(addr)
        if not slab.freelist:
            del self._partial[slab]
        self.active_objs += 1
        return addr

    def free(self, addr: int) -> None:
        """Free an object of this cache (``kmem_cache_free()``).  An address that
        is not a live object of this cache raises BadFree and changes nothing."""
        slab = self._allocator._page_slab.get(addr >> PAGE_SHIFT)
        if slab is None or slab.cache is not self:
            owner = "no slab" if slab is None else f"cache {slab.cache.name}"
            raise BadFree(f"kmem_cache_free({self.name}, {addr:#x}): the address belongs to {owner}")
        self._free(slab, addr)

    def _free(self, slab: Slab, addr: int) -> None:
        if addr not in slab.allocated:
            offset = addr - (slab.pfn << PAGE_SHIFT)
            if offset % self.size or offset // self.size >= self.objects:
                rule = f"not the start of an object (objects are {self.size} bytes from {slab.pfn << PAGE_SHIFT:#x})"
            else:
                rule = "the object is already free (double free)"
            raise BadFree(f"kfree({addr:#x}) in cache {self.name}: {rule}")
        was_full = not slab.freelist
        slab.allocated.remove(addr)
        slab.freelist.append(addr)
        self.active_objs -= 1
        if slab.allocated:
            if was_full:
                self._partial[slab] = None
        elif len(self._partial) >= self.min_partial:
            self._partial.pop(slab, None)
            self._discard_slab(slab)
        elif was_full:
            self._partial[slab] = None

    def shrink(self) -> int:
        """Free every empty slab to the buddy (``kmem_cache_shrink()``); returns the pages freed."""
        empty = [slab for slab in self._partial if not slab.allocated]
        for slab in empty:
            del self._partial[slab]
            self._discard_slab(slab)
        return len(empty) << self.order

    def destroy(self) -> None:
        """Free all slabs and remove the cache (``kmem_cache_destroy()``).

        Refused while objects are allocated, where Linux warns "Slab cache
        still has objects" and keeps the cache; kmalloc caches are permanent.
        """
        if self.is_kmalloc:
            raise SlabError(f"kmem_cache_destroy {self.name}: kmalloc caches cannot be destroyed")
        if self.destroyed:
            raise SlabError(f"kmem_cache_destroy {self.name}: the cache was already destroyed")
        if self.active_objs:
            raise SlabError(f"kmem_cache_destroy {self.name}: Slab cache still has objects "
                            f"({self.active_objs} allocated)")
        self.shrink()
        self._allocator._caches.remove(self)
        self.destroyed = True

    # --- slabs ----------------------------------------------------------------------

    def _new_slab(self) -> Slab | None:
        pfn = self._allocator.buddy.alloc_pages(self.order)
        if pfn is None:
            return None
        slab = Slab(self, pfn)
        page_slab = self._allocator._page_slab
        for page in range(pfn, pfn + (1 << self.order)):
            page_slab[page] = slab
        self.nr_slabs += 1
        return slab

    def _discard_slab(self, slab: Slab) -> None:
        page_slab = self._allocator._page_slab
        for page in range(slab.pfn, slab.pfn + (1 << self.order)):
            del page_slab[page]
        self._allocator.buddy.free_pages(slab.pfn, self.order)
        self.nr_slabs -= 1


class SlabAllocator:
    """The slab layer of the model kernel: kmem caches and kmalloc on one buddy zone.

    The kmalloc caches exist from the start (``create_kmalloc_caches()``) but
    hold no pages until used.  ``buddy`` needs only ``alloc_pages`` and
    ``free_pages``, so a wrapper that tracks the slab's pages works too.
    """

    def __init__(self, buddy: BuddyAllocator) -> None:
        self.buddy = buddy
        self._caches: list[KmemCache] = []  # slab_caches: newest first, as list_add() leaves it
        self._page_slab: dict[int, Slab] = {}  # pfn -> slab, for virt_to_slab()
        self._large: dict[int, int] = {}  # first pfn -> order of each kmalloc_large() block
        self._kmalloc_caches: dict[int, KmemCache] = {}
        # create_kmalloc_caches() makes the two odd sizes first, then 8 .. 8k.
        for index in (1, 2, *range(3, KMALLOC_SHIFT_HIGH + 1)):
            size, name = KMALLOC_INFO[index]
            self._kmalloc_caches[index] = self._create(name, size, ARCH_SLAB_MINALIGN, False, True)

    def _create(self, name: str, size: int, align: int, reclaimable: bool, is_kmalloc: bool) -> KmemCache:
        cache = KmemCache(self, name, size, align, reclaimable, is_kmalloc)
        self._caches.insert(0, cache)
        return cache

    def kmem_cache_create(self, name: str, size: int, align: int = 8, reclaimable: bool = False) -> KmemCache:
        """A new cache of ``size``-byte objects aligned to ``align``; ``reclaimable``
        is SLAB_RECLAIM_ACCOUNT.  Impossible parameters raise ValueError."""
        return self._create(name, size, align, reclaimable, False)

    @property
    def caches(self) -> list[KmemCache]:
        """Live caches in /proc/slabinfo order (newest first)."""
        return list(self._caches)

    def kmalloc_cache(self, size: int) -> KmemCache:
        """The kmalloc cache that serves ``size`` bytes (``kmalloc_slab()``); size must be 1..8 KiB."""
        if not 1 <= size <= KMALLOC_MAX_CACHE_SIZE:
            raise ValueError(f"kmalloc_cache({size}): kmalloc caches serve 1..{KMALLOC_MAX_CACHE_SIZE} bytes")
        return self._kmalloc_caches[kmalloc_index(size)]

    def kmalloc(self, size: int) -> int | None:
        """Physical address of ``size`` bytes, or None when the buddy is out of
        blocks (the caller reclaims and retries).

        Up to 8 KiB comes from the kmalloc cache ``kmalloc_index()`` picks; above
        that ``kmalloc_large()`` takes 2^get_order(size) pages from the buddy.
        Linux returns ZERO_SIZE_PTR for size 0; physical addresses here start
        at 0, so there is no safe sentinel and size 0 raises ValueError, as
        does a size beyond the largest buddy block.
        """
        if size <= KMALLOC_MAX_CACHE_SIZE:
            if size < 1:
                raise ValueError(f"kmalloc({size}): size must be >= 1")
            return self._kmalloc_caches[kmalloc_index(size)].alloc()
        if size > KMALLOC_MAX_SIZE:
            raise ValueError(f"kmalloc({size}): larger than the largest buddy block ({KMALLOC_MAX_SIZE} bytes)")
        order = get_order(size)
        pfn = self.buddy.alloc_pages(order)
        if pfn is None:
            return None
        self._large[pfn] = order
        return pfn << PAGE_SHIFT

    def kfree(self, addr: int | None) -> None:
        """Free what kmalloc (or any kmem cache) returned; ``kfree(None)`` does
        nothing, like ``kfree(NULL)``.  Anything else raises BadFree and changes nothing."""
        if addr is None:
            return
        pfn = addr >> PAGE_SHIFT
        slab = self._page_slab.get(pfn)
        if slab is not None:
            slab.cache._free(slab, addr)
            return
        order = self._large.get(pfn)
        if order is None or addr & (PAGE_SIZE - 1):
            rule = "inside a kmalloc_large() block" if order is not None else "not allocated by the slab allocator"
            raise BadFree(f"kfree({addr:#x}): the address is {rule}")
        del self._large[pfn]
        self.buddy.free_pages(pfn, order)

    def shrink(self) -> int:
        """Shrink every cache (what ``drop_caches`` does to slabs); returns the pages freed."""
        return sum(cache.shrink() for cache in self._caches)

    @property
    def reclaimable_bytes(self) -> int:
        """meminfo SReclaimable: pages of SLAB_RECLAIM_ACCOUNT caches, in bytes."""
        return sum(c.nr_pages for c in self._caches if c.reclaimable) << PAGE_SHIFT

    @property
    def unreclaimable_bytes(self) -> int:
        """meminfo SUnreclaim: pages of the other caches plus kmalloc_large()
        blocks (Linux accounts those as NR_SLAB_UNRECLAIMABLE_B too), in bytes."""
        pages = sum(c.nr_pages for c in self._caches if not c.reclaimable)
        pages += sum(1 << order for order in self._large.values())
        return pages << PAGE_SHIFT

    def slabinfo(self) -> str:
        """/proc/slabinfo: the header of mm/slab_common.c ``print_slabinfo_header()``
        and one ``cache_show()`` line per cache."""
        header = ("slabinfo - version: 2.1\n"
                  "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
                  " : tunables <limit> <batchcount> <sharedfactor>"
                  " : slabdata <active_slabs> <num_slabs> <sharedavail>\n")
        return header + "".join(cache.slabinfo_line() for cache in self._caches)
