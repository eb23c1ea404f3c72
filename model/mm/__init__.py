"""The golden kernel, one module per Linux `mm/` file it follows: buddy and slab allocators, processes and
VMAs, the fault handler, page cache, reclaim, swap and the OOM killer.
"""
